// The span editor of the review screen (task: spans): the text with its spans highlighted by type.
// Keys: Tab / arrows move between spans, a accepts one, Delete removes it, a digit retypes it; select text
// with the mouse or Shift+arrows (a word at a time) and press a digit to add a span of that type.
// The text is put on the page with textContent only: it is data, never markup.
(() => {
  "use strict";
  const TOKEN = /\w+|[^\w\s]/gu;

  class SpanEditor {
    constructor(element, labels) {
      this.element = element;
      this.labels = labels;
      this.text = "";
      this.spans = [];
      this.focus = -1;
      this.sel = null;  // {start, end}: text chosen for a new span
      this.accepted = new Set();
      element.addEventListener("mouseup", () => this.fromMouse());
    }

    load(text, spans, confidence) {
      this.text = text || "";
      this.spans = (spans || []).map((s) => ({ start: s.start, end: s.end, label: s.label }));
      this.confidence = confidence || {};
      this.tokens = [...this.text.matchAll(TOKEN)].map((m) => [m.index, m.index + m[0].length]);
      this.sort();
      this.focus = this.spans.length ? 0 : -1;
      this.sel = null;
      this.accepted = new Set();
      this.render();
    }

    value() { return this.spans.map((s) => ({ start: s.start, end: s.end, label: s.label })); }

    sort() { this.spans.sort((a, b) => a.start - b.start || a.end - b.end || this.labels.indexOf(a.label) - this.labels.indexOf(b.label)); }

    key(event) {  // true when the key was the editor's
      const key = event.key;
      if (/^[1-9]$/.test(key) && this.labels[Number(key) - 1]) return this.apply(this.labels[Number(key) - 1]);
      if (event.shiftKey && (key === "ArrowRight" || key === "ArrowLeft")) { this.extend(key === "ArrowRight" ? 1 : -1); return true; }
      if (key === "Tab" || key === "ArrowRight" || key === "ArrowLeft") {
        this.move(key === "ArrowLeft" || (key === "Tab" && event.shiftKey) ? -1 : 1);
        return true;
      }
      if (key === "Delete" || key === "Backspace" || key === "x") { this.remove(); return true; }
      if (key === "a" && this.focus >= 0) { this.accepted.add(this.id(this.spans[this.focus])); this.move(1); return true; }
      if (key === "Escape" && this.sel) { this.sel = null; this.render(); return true; }
      return false;
    }

    apply(label) {  // a digit or a label button: a new span from the selection, else retype the focused one
      if (this.sel) {
        const span = { start: this.sel.start, end: this.sel.end, label };
        if (!this.spans.some((s) => this.id(s) === this.id(span))) this.spans.push(span);
        this.sort();
        this.focus = this.spans.findIndex((s) => this.id(s) === this.id(span));
        this.sel = null;
      } else if (this.focus >= 0) {
        this.spans[this.focus].label = label;
        this.sort();
      } else return true;
      this.render();
      return true;
    }

    move(step) {
      this.sel = null;
      if (this.spans.length) this.focus = (this.focus + step + this.spans.length) % this.spans.length;
      this.render();
    }

    remove() {
      if (this.focus < 0) return;
      this.spans.splice(this.focus, 1);
      this.focus = Math.min(this.focus, this.spans.length - 1);
      this.render();
    }

    extend(step) {  // Shift+arrows: a word at a time, from the focused span's end (or the text's start)
      const toks = this.tokens;
      if (!toks.length) return;
      if (!this.sel) {
        const after = this.focus >= 0 ? this.spans[this.focus].end : 0;
        const k = Math.max(0, toks.findIndex(([s]) => s >= after));
        this.sel = { start: toks[k][0], end: toks[k][1] };
      } else if (step > 0) {
        const next = toks.find(([, e]) => e > this.sel.end);
        if (next) this.sel.end = next[1];
      } else {
        const shorter = toks.filter(([, e]) => e > this.sel.start && e < this.sel.end).pop();
        if (shorter) this.sel.end = shorter[1];
        else { const before = toks.filter(([s]) => s < this.sel.start).pop(); if (before) this.sel.start = before[0]; }
      }
      this.render();
    }

    fromMouse() {
      const chosen = window.getSelection();
      if (!chosen || chosen.isCollapsed || !chosen.rangeCount) return;
      const range = chosen.getRangeAt(0);
      let start = this.offset(range.startContainer, range.startOffset), end = this.offset(range.endContainer, range.endOffset);
      if (start == null || end == null) return;
      if (start > end) [start, end] = [end, start];
      while (start < end && /\s/.test(this.text[start])) start++;
      while (end > start && /\s/.test(this.text[end - 1])) end--;
      chosen.removeAllRanges();
      if (end > start) { this.sel = { start, end }; this.render(); }
    }

    offset(node, within) {  // a selection boundary (a text node and a character, or an element and a child) in the text
      if (!this.element.contains(node)) return null;
      if (node.nodeType === Node.TEXT_NODE) {
        const segment = node.parentElement.closest("[data-start]");
        return segment ? Number(segment.dataset.start) + within : this.after(node.parentElement);
      }
      if (node.dataset && node.dataset.start) return Number(node.dataset.start) + (within ? node.textContent.length : 0);
      const child = node.childNodes[within];
      return child ? (child.dataset && child.dataset.start ? Number(child.dataset.start) : this.after(child))
        : this.text.length;
    }

    after(node) {  // where the text goes on after a type tag: the next piece's start
      for (let next = node.nextSibling; next; next = next.nextSibling) if (next.dataset && next.dataset.start) return Number(next.dataset.start);
      return this.text.length;
    }

    id(span) { return `${span.start}:${span.end}:${span.label}`; }

    render() {
      const cuts = new Set([0, this.text.length]);
      for (const s of this.spans) { cuts.add(s.start); cuts.add(s.end); }
      if (this.sel) { cuts.add(this.sel.start); cuts.add(this.sel.end); }
      const points = [...cuts].filter((c) => c >= 0 && c <= this.text.length).sort((a, b) => a - b);
      const parts = [];
      for (let k = 0; k + 1 < points.length; k++) {
        const [a, b] = [points[k], points[k + 1]];
        const segment = document.createElement("span");
        segment.dataset.start = String(a);
        segment.textContent = this.text.slice(a, b);
        const over = this.spans.map((s, i) => [s, i]).filter(([s]) => s.start <= a && s.end >= b);
        if (over.length) {
          const [first] = over[0];
          segment.className = "ent";
          segment.dataset.label = first.label;
          segment.style.setProperty("--hue", String((this.labels.indexOf(first.label) * 67) % 360));
          if (over.length > 1) segment.classList.add("overlap");
          if (over.some(([, i]) => i === this.focus)) segment.classList.add("focus");
          if (over.every(([s]) => this.accepted.has(this.id(s)))) segment.classList.add("ok");
          segment.title = over.map(([s]) => {
            const p = this.confidence[this.id(s)];
            return p == null ? s.label : `${s.label} (${(p * 100).toFixed(0)} %)`;
          }).join(", ");
        }
        if (this.sel && a >= this.sel.start && b <= this.sel.end) segment.classList.add("sel");
        parts.push(segment);
        for (const [s] of over.filter(([s]) => s.end === b)) {  // the type after each span's last piece
          const tag = document.createElement("sup");
          tag.className = "tag";
          tag.textContent = s.label;
          parts.push(tag);
        }
      }
      this.element.replaceChildren(...parts);
      const list = this.spans.map((s) => `${this.text.slice(s.start, s.end)} (${s.label})`);
      this.element.setAttribute("aria-label", list.length ? `spans: ${list.join(", ")}` : "no spans");
    }
  }

  window.SpanEditor = SpanEditor;
})();
