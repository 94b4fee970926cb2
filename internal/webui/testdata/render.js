// Runs the page's app.js under node against a live status endpoint
// (argv[2] is its base URL) with a small stand-in for the DOM, lets one
// poll complete, and prints the #cluster panel as JSON. Used by
// webui_test.go (TestPageDrawsCluster); no browser needed. The stand-in
// does not parse index.html: each id is its own element, made on first
// use, shown (hidden false) until the script hides it.
"use strict";
const vm = require("vm");
const base = process.argv[2];

class E {
  constructor(tag, id) {
    this.tagName = tag; this.id = id || ""; this.kids = []; this.attrs = {};
    this.className = ""; this.hidden = false; this.dataset = {}; this.style = { cssText: "" };
    this.title = ""; this.value = ""; this.clientWidth = 300; this.clientHeight = 150;
    const self = this;
    this.classList = {
      add: (c) => { if (!self.className.split(" ").includes(c)) self.className = (self.className + " " + c).trim(); },
      remove: (c) => { self.className = self.className.split(" ").filter((x) => x && x !== c).join(" "); },
    };
  }
  append(...kids) { for (const k of kids) this.kids.push(k instanceof E ? k : String(k)); }
  replaceChildren(...kids) { this.kids = []; this.append(...kids); }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  set textContent(v) { this.kids = [String(v)]; }
  get textContent() { return this.kids.map((k) => (k instanceof E ? k.textContent : k)).join(""); }
  get tBodies() { if (!this._tb) { this._tb = [new E("tbody")]; this.kids.push(this._tb[0]); } return this._tb; }
  addEventListener() {}
  remove() {}
  focus() {}
  getContext() { return new Proxy({}, { get: () => () => {}, set: () => true }); }
  toJSON() {
    return { tag: this.tagName, id: this.id || undefined, class: this.className || undefined, hidden: this.hidden || undefined,
      attrs: Object.keys(this.attrs).length ? this.attrs : undefined, kids: this.kids };
  }
}

const byID = new Map();
const storage = new Map();
const realFetch = globalThis.fetch;
const realSetTimeout = globalThis.setTimeout, realClearTimeout = globalThis.clearTimeout;
Object.assign(globalThis, {
  Node: E,
  document: {
    getElementById: (id) => { if (!byID.has(id)) byID.set(id, new E("div", id)); return byID.get(id); },
    createElement: (tag) => new E(tag),
    body: new E("body"),
    documentElement: new E("html"),
  },
  window: { addEventListener() {}, devicePixelRatio: 1 },
  location: { search: "" },
  sessionStorage: { getItem: (k) => (storage.has(k) ? storage.get(k) : null), setItem: (k, v) => storage.set(k, String(v)), removeItem: (k) => storage.delete(k) },
  getComputedStyle: () => ({ getPropertyValue: () => "#000" }),
  fetch: (path, opts) => realFetch(base + path, opts),
  // The page's timer for its next poll means the first poll is done
  // (other timers are node's own, fetch's).
  setTimeout: (fn, ms, ...args) => {
    if (fn.name !== "poll") return realSetTimeout(fn, ms, ...args);
    const get = (id) => byID.get(id) || null;
    const out = { loaded: !!document.body.dataset.loaded, banner: get("banner") ? get("banner").textContent : "",
      cluster: get("cluster"), summary: get("cluster-summary"), nodes: get("cluster-nodes") };
    process.stdout.write(JSON.stringify(out) + "\n");
    process.exit(0);
  },
  clearTimeout: (t) => realClearTimeout(t),
});
realFetch(base + "/ui/app.js").then((r) => r.text()).then((src) => vm.runInThisContext(src, { filename: "app.js" }))
  .catch((e) => { console.error(e); process.exit(1); });
