// cbir-pg serve: the little JavaScript the pages need (no framework, nothing fetched from outside).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Search form: an upload goes as a multipart POST, an image id as a plain GET link; a chosen file
  // wins over an id, and choosing one clears the other.
  const form = document.getElementById("search");
  if (form) {
    const file = document.getElementById("file");
    const id = document.getElementById("image_id");
    file.addEventListener("change", () => { if (file.files.length) id.value = ""; });
    id.addEventListener("input", () => { if (id.value) file.value = ""; });
    form.addEventListener("submit", () => {
      if (file.files.length) {
        form.method = "post";
        id.disabled = true;
      } else {
        form.method = "get";
        file.disabled = true;
      }
      // leave empty filters out of the URL
      for (const el of form.elements) {
        if (el.name && el.value === "" && el.type !== "file") el.disabled = true;
      }
    });
    // a new choice of model or filter re-runs the current query by id
    for (const name of ["model", "split", "dataset", "modality", "label", "sex", "exclude_same_patient"]) {
      const el = document.getElementById(name);
      if (el) el.addEventListener("change", () => { if (id.value && !file.files.length) form.requestSubmit(); });
    }
  }
  // Image page: display-only window/level (contrast/brightness) on the decoded image.
  const full = document.getElementById("full");
  if (full) {
    const w = document.getElementById("wl-window");
    const l = document.getElementById("wl-level");
    const apply = () => { full.style.filter = `contrast(${w.value}%) brightness(${l.value}%)`; };
    w.addEventListener("input", apply);
    l.addEventListener("input", apply);
    document.getElementById("wl-reset").addEventListener("click", () => { w.value = 100; l.value = 100; apply(); });
  }
});
