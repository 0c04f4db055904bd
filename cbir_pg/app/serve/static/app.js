// cbir-pg serve: the little JavaScript the pages need (no framework, nothing fetched from outside).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Search form: an upload goes as a multipart POST, an image id as a plain GET link; a chosen file
  // wins over an id, and choosing one clears the other.
  const form = document.getElementById("search");
  if (form) {
    const file = document.getElementById("file");
    const id = document.getElementById("image_id");
    const kept = document.getElementById("upload");  // a kept upload's token (the upload stays for the session)
    file.addEventListener("change", () => { if (file.files.length) { id.value = ""; kept.value = ""; } });
    id.addEventListener("input", () => { if (id.value) { file.value = ""; kept.value = ""; } });
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
    // "exclude the query's patient" and "same patient only" exclude each other
    const other = document.getElementById("exclude_same_patient"), same = document.getElementById("same_patient");
    if (other && same) {
      other.addEventListener("change", () => { if (other.checked) same.checked = false; });
      same.addEventListener("change", () => { if (same.checked) other.checked = false; });
    }
    // a new choice of model or filter re-runs the current query: by id, or the kept upload
    for (const name of ["model", "split", "dataset", "modality", "label", "sex", "exclude_same_patient", "same_patient", "age_min", "age_max", "k"]) {
      const el = document.getElementById(name);
      if (el) el.addEventListener("change", () => { if ((id.value || kept.value) && !file.files.length) form.requestSubmit(); });
    }
  }
  // Results page: a report figure opens enlarged in a dialog (Esc, a click or the close button shut it).
  const box = document.getElementById("lightbox");
  if (box) {
    for (const a of document.querySelectorAll(".figures a.enlarge")) {
      a.addEventListener("click", (ev) => {
        ev.preventDefault();
        const img = a.querySelector("img");
        box.querySelector("img").src = img.src;
        box.querySelector("img").alt = img.alt;
        box.querySelector(".caption").textContent = img.alt;
        box.showModal();
      });
    }
    box.addEventListener("click", () => box.close());
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
