// The world map: country outlines shipped with the page, an opt-in OpenStreetMap layer, and one result's
// markers (prediction, LLM candidates, near and far gallery rows) with a legend. Leaflet (window.L) and
// topojson-client (window.topojson) are loaded before this module by index.html.

import { candidates, neighbors } from "./geojson.js";

const L = window.L;

export const ROLES = {
  prediction: { label: "Prediction", z: 1000, size: 22 },
  candidate: { label: "LLM candidate", z: 600, size: 14 },
  near: { label: "Similar gallery photo", z: 300, size: 12 },
  far: { label: "Dissimilar gallery photo", z: 100, size: 10 },
};
const OSM = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";

/** Fixed-point degrees as the page shows them. */
export function degrees(value) {
  return Number(value).toFixed(5);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A ring whose longitudes jump across the antimeridian, made continuous (some longitudes then lie past
 * ±180, which Leaflet draws beside the map's edge); a ring going round the globe (Antarctica) is closed
 * along its pole. world-atlas keeps such rings whole, as spherical renderers want them. */
function unwrapRing(ring) {
  const out = [ring[0].slice()];
  let shift = 0;
  for (let i = 1; i < ring.length; i++) {
    const step = ring[i][0] - ring[i - 1][0];
    if (step > 180) shift -= 360;
    else if (step < -180) shift += 360;
    out.push([ring[i][0] + shift, ring[i][1]]);
  }
  if (shift !== 0) {
    const pole = out.reduce((sum, p) => sum + p[1], 0) < 0 ? -90 : 90;
    out.push([out[out.length - 1][0], pole], [out[0][0], pole], out[0].slice());
  }
  return out;
}

function unwrapGeometry(geometry) {
  if (!geometry) return;
  if (geometry.type === "Polygon") geometry.coordinates = geometry.coordinates.map(unwrapRing);
  if (geometry.type === "MultiPolygon") geometry.coordinates = geometry.coordinates.map((p) => p.map(unwrapRing));
}

function shifted(feature, offset) {
  const move = (c) => (typeof c[0] === "number" ? [c[0] + offset, c[1]] : c.map(move));
  const g = feature.geometry;
  return { ...feature, geometry: g && { type: g.type, coordinates: move(g.coordinates) } };
}

export class WorldMap {
  /** The map in the element `id`; `thumbnails`: whether the server answers gallery thumbnails. */
  constructor(id, thumbnails) {
    this.thumbnails = thumbnails;
    this.element = document.getElementById(id);
    this.map = L.map(id, {
      worldCopyJump: true,
      minZoom: 1,
      maxZoom: 18,
      zoomSnap: 0.25,
      maxBounds: [[-86, -540], [86, 540]], // Web Mercator ends near ±85°: no panning into the void
      maxBoundsViscosity: 0.8,
    });
    this.map.setView([20, 0], 2);
    this.markers = L.layerGroup().addTo(this.map);
    this.list = [];
    this.countries = null;
    this.tiles = L.tileLayer(OSM, {
      maxZoom: 19,
      attribution: '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
    });
    this._legend();
  }

  /** Draws the country outlines from the TopoJSON at `url` (Natural Earth 1:110m). */
  async loadOutlines(url) {
    const answer = await fetch(url);
    if (!answer.ok) throw new Error(`country outlines: HTTP ${answer.status}`);
    const topo = await answer.json();
    const shapes = window.topojson.feature(topo, topo.objects.countries);
    for (const country of shapes.features) unwrapGeometry(country.geometry);
    // The world beside the map's edges too, so that panning across the antimeridian shows land.
    const copies = [-360, 0, 360].flatMap((offset) => shapes.features.map((f) => shifted(f, offset)));
    this.countries = L.geoJSON({ type: "FeatureCollection", features: copies }, {
      interactive: false,
      style: { color: "#8d99a6", weight: 0.7, fillColor: "#f6f3ec", fillOpacity: 1 },
    }).addTo(this.map);
    this.countries.bringToBack();
    this.map.attributionControl.addAttribution("Outlines: Natural Earth");
  }

  _legend() {
    const legend = L.control({ position: "bottomright" });
    legend.onAdd = () => {
      const box = el("div", "legend");
      for (const [role, spec] of Object.entries(ROLES)) {
        const row = el("div", "legend-row");
        row.append(el("span", `mk mk-${role} legend-mark`), el("span", "", spec.label));
        box.append(row);
      }
      const toggle = el("label", "legend-row legend-tiles");
      const box2 = el("input");
      box2.type = "checkbox";
      box2.id = "osm-tiles";
      box2.addEventListener("change", () => this.setTiles(box2.checked));
      toggle.append(box2, el("span", "", "OpenStreetMap tiles (online)"));
      box.append(toggle);
      L.DomEvent.disableClickPropagation(box);
      return box;
    };
    legend.addTo(this.map);
  }

  /** Shows or hides the OpenStreetMap tiles (fetched by the browser; they need the internet). */
  setTiles(on) {
    if (on) this.tiles.addTo(this.map);
    else this.tiles.remove();
    if (this.countries) this.countries.setStyle({ fillOpacity: on ? 0 : 1, weight: on ? 0.4 : 0.7 });
  }

  _marker(role, lat, lon, rank, describe) {
    const size = ROLES[role].size;
    // Leaflet moves the icon's element with a CSS transform: the shape (rotated for candidates) is inside it.
    const icon = L.divIcon({ className: "mk-icon", iconSize: [size, size], html: `<span class="mk mk-${role}"></span>` });
    const marker = L.marker([lat, lon], { icon, zIndexOffset: ROLES[role].z, keyboard: false, riseOnHover: true });
    marker.bindTooltip(describe.title, { direction: "top", offset: [0, -size / 2] });
    marker.bindPopup(() => this._popup(describe), { minWidth: 180, autoPanPaddingTopLeft: [56, 16] });
    marker.addTo(this.markers);
    this.list.push({ role, rank, marker, row: describe.row });
    return marker;
  }

  _popup(describe) {
    const box = el("div", "popup");
    box.append(el("strong", "", describe.title));
    for (const line of describe.lines) box.append(el("div", "", line));
    if (describe.row !== undefined && this.thumbnails) {
      const img = el("img", "popup-thumb");
      img.alt = `gallery row ${describe.row}`;
      img.src = `v1/gallery/${describe.row}/thumbnail`;
      img.addEventListener("error", () => img.remove());
      box.append(img);
    }
    return box;
  }

  /** Draws `result` (a /v1/locate answer); returns nothing. Clears the previous result's markers. */
  show(result) {
    this.markers.clearLayers();
    this.list = [];
    const points = [];
    const rows = neighbors(result);
    const sides = { near: "Similar", far: "Dissimilar" };
    for (const side of ["far", "near"]) {
      rows[side].forEach((r, rank) => {
        if (!Number.isFinite(r.lat) || !Number.isFinite(r.lon)) return;
        this._marker(side, r.lat, r.lon, rank, {
          title: `${sides[side]} #${rank + 1} · score ${Number(r.score).toFixed(4)}`,
          lines: [`${degrees(r.lat)}, ${degrees(r.lon)}`, `gallery row ${r.row}`],
          row: r.row,
        });
        if (side === "near") points.push([r.lat, r.lon]);
      });
    }
    candidates(result).forEach(([lat, lon], rank) => {
      this._marker("candidate", lat, lon, rank, {
        title: `LLM candidate #${rank + 1}`,
        lines: [`${degrees(lat)}, ${degrees(lon)}`],
      });
      points.push([lat, lon]);
    });
    if (Number.isFinite(result.lat) && Number.isFinite(result.lon)) {
      this._marker("prediction", result.lat, result.lon, 0, {
        title: `Prediction · ${result.id}`,
        lines: [`${degrees(result.lat)}, ${degrees(result.lon)}`, `confidence ${Math.round(100 * result.confidence)}%`],
      });
      points.push([result.lat, result.lon]);
    }
    this.element.dataset.photoId = String(result.id);
    const pred = this.prediction();
    this.element.dataset.predLat = pred ? String(pred.lat) : "";
    this.element.dataset.predLng = pred ? String(pred.lng) : "";
    if (points.length) this.map.fitBounds(L.latLngBounds(points), { padding: [40, 40], maxZoom: 6 });
  }

  /** Removes every marker (a failed photo). */
  clear() {
    this.markers.clearLayers();
    this.list = [];
    this.element.dataset.photoId = "";
    this.element.dataset.predLat = "";
    this.element.dataset.predLng = "";
  }

  /** The prediction marker's position as Leaflet holds it ({lat, lng}), or null. */
  prediction() {
    const found = this.list.find((m) => m.role === "prediction");
    return found ? found.marker.getLatLng() : null;
  }

  /** Every marker: its role, rank, position as Leaflet holds it, and its pixel in the map's element. */
  describe() {
    const box = this.element.getBoundingClientRect();
    return this.list.map(({ role, rank, marker }) => {
      const at = marker.getLatLng();
      const icon = marker.getElement().getBoundingClientRect();
      return {
        role,
        rank,
        lat: at.lat,
        lng: at.lng,
        x: icon.left + icon.width / 2 - box.left,
        y: icon.top + icon.height / 2 - box.top,
        expected: this.map.latLngToContainerPoint(at),
      };
    });
  }

  /** Opens the popup of the marker of `role` and `rank`. */
  open(role, rank) {
    const found = this.list.find((m) => m.role === role && m.rank === rank);
    if (found) found.marker.openPopup(); // the popup pans the map to show itself
  }
}
