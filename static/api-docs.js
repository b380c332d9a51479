"use strict";
// Built with the DOM API only (textContent), so nothing from the document is parsed as HTML.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
function ref(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") return ref(schema.items) + "[]";
  if (schema.oneOf) return schema.oneOf.map(ref).join(" | ");
  return Array.isArray(schema.type) ? schema.type.join(" | ") : (schema.type || "object");
}
fetch("/api/openapi.json").then(r => r.json()).then(doc => {
  const ops = document.getElementById("ops");
  ops.textContent = "";
  const tags = new Set();
  for (const [path, methods] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op.tags || ["other"])[0];
      if (!tags.has(tag)) { tags.add(tag); ops.append(el("h2", { id: "tag-" + tag }, tag)); }
      const section = el("section", { class: "op" },
        el("div", {}, el("span", { class: "method " + method }, method), el("code", {}, path)),
        el("p", {}, op.summary || op.description || ""));
      if (op.parameters && op.parameters.length) {
        const t = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "description")));
        for (const p of op.parameters) t.append(el("tr", {}, el("td", {}, el("code", {}, p.name + (p.required ? " *" : ""))), el("td", {}, p.in), el("td", {}, ref(p.schema)), el("td", {}, p.description || "")));
        section.append(t);
      }
      const rt = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "body"), el("th", {}, "description")));
      for (const [status, resp] of Object.entries(op.responses || {})) {
        const content = resp.content ? Object.entries(resp.content).map(([ct, c]) => ct + ": " + ref(c.schema)).join(", ") : "";
        rt.append(el("tr", {}, el("td", {}, status), el("td", {}, content), el("td", {}, resp.description || "")));
      }
      section.append(rt);
      ops.append(section);
    }
  }
  const nav = document.getElementById("tags");
  for (const t of tags) nav.append(el("a", { href: "#tag-" + t }, t));
  const schemas = document.getElementById("schemas");
  for (const [name, schema] of Object.entries((doc.components || {}).schemas || {})) {
    schemas.append(el("details", {}, el("summary", {}, el("code", {}, name)), el("pre", {}, JSON.stringify(schema, null, 2))));
  }
}).catch(e => { document.getElementById("ops").textContent = "Could not load the OpenAPI document: " + e; });
