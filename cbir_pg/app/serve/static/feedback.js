// cbir-pg serve: similarity-map overlays, judgements and "moved" badges on the neighbour cards.
// Each .feedback-bar (data-query-id, data-model) drives the cards of the grid that follows it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const bar of document.querySelectorAll(".feedback-bar")) {
    const query = bar.dataset.queryId;
    const model = bar.dataset.model;
    let grid = bar.nextElementSibling;
    while (grid && !grid.classList.contains("grid")) grid = grid.nextElementSibling;
    if (!grid || !query) continue;
    const cards = [...grid.querySelectorAll("figure.card[data-image-id]")];
    const toggle = bar.querySelector(".explain-toggle");
    const method = bar.querySelector(".explain-method");
    const explainUrl = (id) => `/api/images/${query}/explain?` + new URLSearchParams(
      {neighbour: id, model: model, method: method.value, side: "neighbour"});
    const show = () => {
      for (const card of cards) {
        const img = card.querySelector("img");
        if (!img.dataset.thumb) img.dataset.thumb = img.src;
        img.src = toggle.checked ? explainUrl(card.dataset.imageId) : img.dataset.thumb;
        card.classList.toggle("explained", toggle.checked);
      }
    };
    toggle.addEventListener("change", show);
    method.addEventListener("change", () => { if (toggle.checked) show(); });

    // judgements: two buttons and a reason on every card; the verdict is posted as the logged-in user
    const mark = (card, verdict) => {
      card.classList.toggle("judged-relevant", verdict === "relevant");
      card.classList.toggle("judged-not", verdict === "not_relevant");
      card.dataset.verdict = verdict || "";
    };
    for (const card of cards) {
      const box = document.createElement("div");
      box.className = "judge";
      const reason = document.createElement("input");
      reason.type = "text"; reason.maxLength = 2000; reason.placeholder = "reason (private)";
      reason.className = "reason";
      for (const [verdict, text] of [["relevant", "relevant"], ["not_relevant", "not relevant"]]) {
        const b = document.createElement("button");
        b.type = "button"; b.textContent = text; b.className = `judge-${verdict}`;
        b.addEventListener("click", async () => {
          const r = await fetch("/api/judgements", {
            method: "POST", headers: {"Content-Type": "application/json"}, credentials: "same-origin",
            body: JSON.stringify({query_image_id: Number(query), neighbour_id: Number(card.dataset.imageId),
                                  model: model, verdict: verdict, reason: reason.value || null}),
          });
          if (r.ok) mark(card, verdict);
          else card.dataset.error = (await r.json()).error || String(r.status);
        });
        box.appendChild(b);
      }
      box.appendChild(reason);
      card.appendChild(box);
    }
    fetch(`/api/images/${query}/judgements`, {credentials: "same-origin"}).then((r) => r.ok ? r.json() : null)
      .then((data) => {
        if (!data) return;
        for (const j of data.judgements) {
          const card = cards.find((c) => c.dataset.imageId === String(j.neighbour_id));
          if (card) mark(card, j.verdict);
        }
      });

    // after "Refine": a badge with each case's move
    const moves = document.getElementById("moves");
    if (moves) {
      for (const row of moves.querySelectorAll("tr[data-image-id]")) {
        const card = cards.find((c) => c.dataset.imageId === row.dataset.imageId);
        if (!card) continue;
        const badge = document.createElement("span");
        badge.className = `moved ${row.dataset.change}`;
        badge.textContent = row.dataset.change === "new" ? "new" :
          row.dataset.change === "same" ? "=" : `${row.dataset.change === "up" ? "▲" : "▼"} was #${row.dataset.before}`;
        card.querySelector("figcaption").prepend(badge);
      }
    }
  }
});
