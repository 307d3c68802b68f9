// The page of `vreid serve`: upload or drop a query, show the ranked gallery, click a result to search from it.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let query = null;  // the current query image (a File or Blob)

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").classList.toggle("error", Boolean(isError));
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status === 401) $("token-form").hidden = false;
    if (!response.ok) throw new Error((body && body.error) || ("HTTP " + response.status));
    return body;
  }

  function utcSeconds(value) {  // a datetime-local value, read as UTC
    return value ? String(Date.parse(value + "Z") / 1000) : "";
  }

  function setQuery(blob) {
    query = blob;
    const preview = $("query-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(blob);
    preview.hidden = false;
    $("drop-hint").hidden = true;
    $("search").disabled = false;
    search();
  }

  function cell(dl, name, value) {
    const dt = document.createElement("dt"); dt.textContent = name;
    const dd = document.createElement("dd"); dd.textContent = value; dd.title = value;
    dl.append(dt, dd);
  }

  function render(results) {
    const grid = $("results");
    grid.replaceChildren();
    for (const hit of results) {
      const card = document.createElement("figure");
      card.className = "hit"; card.tabIndex = 0;
      card.dataset.id = String(hit.id);
      card.dataset.rank = String(hit.rank);
      card.title = "search from this image";
      const img = document.createElement("img");
      img.src = hit.image; img.alt = hit.name; img.loading = "lazy";
      const dl = document.createElement("dl");
      cell(dl, "rank", String(hit.rank)); dl.lastChild.classList.add("rank");
      cell(dl, "camera", hit.camera === null ? "?" : String(hit.camera));
      cell(dl, "time", hit.time_iso ? hit.time_iso.replace("T", " ").replace("Z", "") : "?");
      cell(dl, "distance", hit.distance.toFixed(4));
      cell(dl, "file", hit.name);
      card.append(img, dl);
      const again = async () => {
        try {
          const response = await fetch(hit.image, { credentials: "same-origin" });
          if (!response.ok) throw new Error("cannot fetch image " + hit.id);
          setQuery(await response.blob());
        } catch (e) { setStatus(e.message, true); }
      };
      card.addEventListener("click", again);
      card.addEventListener("keydown", (e) => { if (e.key === "Enter") again(); });
      grid.append(card);
    }
  }

  async function search() {
    if (!query) return;
    const params = new URLSearchParams({ top: $("top").value || "20" });
    const cams = $("cameras").value.trim();
    if (cams) params.set("cameras", cams);
    const after = utcSeconds($("after").value), before = utcSeconds($("before").value);
    if (after) params.set("after", after);
    if (before) params.set("before", before);
    const form = new FormData();
    form.append("image", query, query.name || "query.png");
    setStatus("searching...");
    const t0 = performance.now();
    try {
      const body = await api("/api/search?" + params.toString(), { method: "POST", body: form });
      render(body.results);
      setStatus(body.results.length + " results (" + body.metric + " distance, smaller is closer) in " +
                Math.round(performance.now() - t0) + " ms");
      document.body.dataset.searched = String(Number(document.body.dataset.searched || 0) + 1);
    } catch (e) { setStatus(e.message, true); }
  }

  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  $("file").addEventListener("change", () => { if ($("file").files[0]) setQuery($("file").files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) setQuery(file);
  });
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    window.location.href = "/?token=" + encodeURIComponent($("token").value);
  });

  api("/api/stats").then((s) => {
    $("gallery-info").textContent = s.items + " gallery images, " + s.dim + "-d " + s.metric;
  }).catch((e) => setStatus(e.message, true));
})();
