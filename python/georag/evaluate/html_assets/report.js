// georag eval --html: zoom, pan, hover and highlight on each map; inlined into the page, no library.
"use strict";
(function () {
  const W = 360, H = 180, MIN_W = 2;

  function fmt(pair) {
    return pair ? pair[0].toFixed(4) + ", " + pair[1].toFixed(4) : "none";
  }

  function setUp(box) {
    const svg = box.querySelector("svg.map");
    const tip = box.querySelector(".tip");
    const data = JSON.parse(document.getElementById(svg.id + "-data").textContent);
    const rows = box.querySelectorAll(".worst tbody tr[data-i]");
    let view = { x: 0, y: 0, w: W, h: H };
    let chosen = null;
    svg.classList.add("js");

    function apply() {
      view.w = Math.min(Math.max(view.w, MIN_W), W);
      view.h = view.w * H / W;
      view.x = Math.min(Math.max(view.x, 0), W - view.w);
      view.y = Math.min(Math.max(view.y, 0), H - view.h);
      svg.setAttribute("viewBox", [view.x, view.y, view.w, view.h].map(v => v.toFixed(4)).join(" "));
      const px = svg.getBoundingClientRect().width || 1000;
      svg.style.setProperty("--u", String(view.w / px));  // map units per screen pixel
    }

    function toMap(evt) {
      const r = svg.getBoundingClientRect();
      return { x: view.x + (evt.clientX - r.left) / r.width * view.w,
               y: view.y + (evt.clientY - r.top) / r.height * view.h };
    }

    function marks(i) {
      return svg.querySelectorAll('[data-i="' + i + '"]');
    }

    function select(i, zoom) {
      if (chosen !== null) marks(chosen).forEach(m => m.classList.remove("hl"));
      rows.forEach(r => r.classList.toggle("hl", r.dataset.i === String(i)));
      chosen = i;
      svg.classList.toggle("focus", i !== null);
      if (i === null) return;
      marks(i).forEach(m => { m.classList.add("hl"); m.parentNode.appendChild(m); });  // drawn on top
      const row = box.querySelector('.worst tbody tr[data-i="' + i + '"]');
      if (row && !zoom) row.scrollIntoView({ block: "nearest" });
      if (zoom) {
        const pts = [data.truth[i], data.pred[i]].filter(Boolean).map(p => [((p[1] + 540) % 360), 90 - p[0]]);
        const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
        let w = Math.max(Math.max(...xs) - Math.min(...xs), 2 * (Math.max(...ys) - Math.min(...ys))) * 1.4;
        w = Math.max(w, 12);
        view = { x: (Math.max(...xs) + Math.min(...xs)) / 2 - w / 2,
                 y: (Math.max(...ys) + Math.min(...ys)) / 2 - w * H / W / 2, w: w };
        apply();
      }
    }

    function show(i, evt) {
      const km = data.km[i];
      tip.innerHTML = "";
      const b = document.createElement("b");
      b.textContent = data.ids[i];
      tip.appendChild(b);
      const lines = [km === null ? "no prediction" : "error " + km.toLocaleString() + " km",
                     "truth " + fmt(data.truth[i]), "prediction " + fmt(data.pred[i])];
      for (const text of lines) {
        const div = document.createElement("div");
        div.textContent = text;
        tip.appendChild(div);
      }
      const r = box.querySelector(".mapwrap").getBoundingClientRect();
      let left = evt.clientX - r.left + 14, top = evt.clientY - r.top + 14;
      tip.hidden = false;
      if (left + tip.offsetWidth > r.width) left = evt.clientX - r.left - tip.offsetWidth - 14;
      if (top + tip.offsetHeight > r.height) top = evt.clientY - r.top - tip.offsetHeight - 14;
      tip.style.left = left + "px";
      tip.style.top = top + "px";
    }

    let drag = null;
    svg.addEventListener("pointerdown", evt => {
      drag = { x: evt.clientX, y: evt.clientY, view: Object.assign({}, view), moved: false };
    });
    svg.addEventListener("pointermove", evt => {
      if (drag) {
        const r = svg.getBoundingClientRect();
        const dx = evt.clientX - drag.x, dy = evt.clientY - drag.y;
        if (!drag.moved && Math.abs(dx) + Math.abs(dy) > 3) {
          drag.moved = true;  // a drag, not a click: the map follows the pointer until it is released
          svg.setPointerCapture(evt.pointerId);
          svg.classList.add("dragging");
          tip.hidden = true;
        }
        if (drag.moved) {
          view.x = drag.view.x - dx / r.width * view.w;
          view.y = drag.view.y - dy / r.height * view.h;
          apply();
          return;
        }
      }
      const i = evt.target.dataset ? evt.target.dataset.i : undefined;
      if (i === undefined) tip.hidden = true; else show(Number(i), evt);
    });
    svg.addEventListener("pointerup", evt => {
      const moved = drag && drag.moved;
      drag = null;
      svg.classList.remove("dragging");
      if (moved) return;
      const i = evt.target.dataset ? evt.target.dataset.i : undefined;
      select(i === undefined ? null : Number(i), false);
    });
    svg.addEventListener("pointerleave", () => { tip.hidden = true; });
    svg.addEventListener("wheel", evt => {
      evt.preventDefault();
      const at = toMap(evt), k = Math.exp(evt.deltaY * 0.0015);
      const w = Math.min(Math.max(view.w * k, MIN_W), W);
      view.x = at.x - (at.x - view.x) * w / view.w;
      view.y = at.y - (at.y - view.y) * w / view.w;
      view.w = w;
      apply();
    }, { passive: false });
    svg.addEventListener("dblclick", () => { view = { x: 0, y: 0, w: W, h: H }; apply(); });
    rows.forEach(r => r.addEventListener("click", () => select(Number(r.dataset.i), true)));
    box.querySelector("button.reset").addEventListener("click", () => {
      select(null, false);
      view = { x: 0, y: 0, w: W, h: H };
      apply();
    });
    document.addEventListener("keydown", evt => { if (evt.key === "Escape") select(null, false); });
    window.addEventListener("resize", apply);
    apply();
  }

  document.querySelectorAll(".mapbox").forEach(setUp);
})();
