// A served result as GeoJSON (RFC 7946), exactly as georag.geojson writes it in Python (the tests compare
// the two): the prediction as a Point [lon, lat] with id, role, confidence, strategy, error, fallback; with
// evidence, the regions of the LLM's answers (role "region"), the LLM candidates (role "candidate") and the
// gallery rows (role "near" / "far") after it.

/** A Point at (lat, lon) degrees, the longitude wrapped into [-180, 180]; null when not a valid position. */
export function point(lat, lon) {
  if (lat === null || lat === undefined || lon === null || lon === undefined) return null;
  lat = Number(lat);
  lon = Number(lon);
  if (!Number.isFinite(lat) || !Number.isFinite(lon) || Math.abs(lat) > 90) return null;
  if (Math.abs(lon) > 180) lon = ((((lon + 180) % 360) + 360) % 360) - 180;
  return { type: "Point", coordinates: [lon, lat] };
}

/** The LLM's parsed answers as [lat, lon] pairs (vpr-guided+rag keeps the rag step's evidence apart). */
export function candidates(result) {
  const evidence = result.evidence || {};
  const rag = evidence.rag && typeof evidence.rag === "object" && !Array.isArray(evidence.rag) ? evidence.rag : evidence;
  return (rag.candidates || [])
    .filter((c) => Array.isArray(c) && c.length === 2)
    .map((c) => [Number(c[0]), Number(c[1])]);
}

/** The places the LLM's answers crowd around: [{lat, lon, radius_km, count, share}], most populous first. */
export function regions(result) {
  const evidence = result.evidence || {};
  const rag = evidence.rag && typeof evidence.rag === "object" && !Array.isArray(evidence.rag) ? evidence.rag : evidence;
  return (rag.regions || []).filter((r) => r && typeof r === "object" && !Array.isArray(r));
}

/** The retrieved gallery rows: {near: [{row, score, lat, lon}], far: [...]}. */
export function neighbors(result) {
  const found = (result.evidence || {}).neighbors || {};
  return { near: found.near || [], far: found.far || [] };
}

function feature(geometry, properties) {
  return { type: "Feature", geometry, properties };
}

/** The Features of one result: its prediction, then (with evidence) its candidates and neighbours. */
export function features(result, evidence) {
  const id = String(result.id);
  const error = result.error === undefined ? null : result.error;
  const geometry = error === null ? point(result.lat, result.lon) : null;
  const confidence = Number(result.confidence || 0);
  const out = [
    feature(geometry, {
      id,
      role: "prediction",
      confidence: geometry !== null && Number.isFinite(confidence) ? confidence : null,
      strategy: String(result.strategy === undefined ? "" : result.strategy),
      error,
      fallback: result.fallback === undefined ? null : result.fallback,
    }),
  ];
  if (!evidence) return out;
  regions(result).forEach((region, rank) => {
    const g = point(region.lat, region.lon);
    const pick = (k) => (region[k] === undefined ? null : region[k]);
    const props = { id, role: "region", rank, radius_km: pick("radius_km"), count: pick("count"), share: pick("share") };
    if (g !== null) out.push(feature(g, props));
  });
  candidates(result).forEach(([lat, lon], rank) => {
    const g = point(lat, lon);
    if (g !== null) out.push(feature(g, { id, role: "candidate", rank }));
  });
  const rows = neighbors(result);
  for (const side of ["near", "far"]) {
    rows[side].forEach((row, rank) => {
      const g = point(row.lat, row.lon);
      const score = row.score === undefined ? null : row.score;
      const props = { id, role: side, rank, row: row.row === undefined ? null : row.row, score };
      if (g !== null) out.push(feature(g, props));
    });
  }
  return out;
}

/** A FeatureCollection of results. */
export function featureCollection(results, evidence) {
  return { type: "FeatureCollection", features: results.flatMap((r) => features(r, evidence)) };
}
