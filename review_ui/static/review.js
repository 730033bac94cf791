// The review screen: keys first, one round trip per answer (the submit's response carries the next item).
// Item text is put on the page with textContent only: it is data, never markup.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const expert = $("review").dataset.expert === "true";
  // multi_label: digits turn labels on and off, Enter submits the set; otherwise a digit submits its label.
  const sets = $("review").dataset.task === "multi_label";
  // spans: the span editor (spans.js) takes digits, arrows and Delete; Enter submits its spans.
  const spanning = $("review").dataset.task === "spans";
  const spanField = $("review").dataset.spanField;
  const labelButtons = [...document.querySelectorAll("button.label")];
  const editor = spanning ? new window.SpanEditor(document.createElement("div"), labelButtons.map((b) => b.dataset.label)) : null;
  if (editor) editor.element.className = "field spans";
  const idk = $("idk"), help = $("help");
  const asGold = $("as-gold"), asExample = $("as-example");
  let current = null, chosen = null, busy = false, toggled = new Set();

  class ApiError extends Error {}

  function clientId() {  // crypto.randomUUID needs a secure context; this works on plain http too
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function call(method, path, body) {
    // Network failures and a busy store (503) are retried with the same body: the client id in it makes a
    // retried submit count once.
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await fetch(path, {
          method, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
          headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
        });
        if (response.status === 401) { location.href = "/login?next=/review"; return null; }
        if (response.status === 503 && attempt < 5) {
          say("The store is busy; trying again…");
          await new Promise((resolve) => setTimeout(resolve, 1000 * Number(response.headers.get("Retry-After") || 2)));
          continue;
        }
        const data = await response.json().catch(() => ({}));
        if (!response.ok) throw new ApiError(typeof data.detail === "string" ? data.detail : response.statusText);
        return data;
      } catch (error) {
        if (error instanceof ApiError || attempt >= 3) throw error;
        await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
      }
    }
  }

  function say(text, isError = false) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  function cell(row, text) { row.insertCell().textContent = text; }

  function highlight() {
    for (const button of labelButtons) {
      const on = sets ? toggled.has(button.dataset.label) : button.dataset.label === chosen;
      button.classList.toggle("chosen", on);
      if (sets) button.setAttribute("aria-pressed", String(on));
    }
  }

  function choose(label) {  // a digit or a click on a label
    if (spanning) { editor.apply(label); return; }
    if (!sets) { chosen = label; highlight(); submit(chosen); return; }
    if (toggled.has(label)) toggled.delete(label); else toggled.add(label);
    highlight();
  }

  const shown = (answer) => !Array.isArray(answer) ? answer
    : !answer.length ? (spanning ? "no spans" : "none of the labels")
    : answer.map((a) => typeof a === "object" ? `${a.text ?? ""} (${a.label})` : a).join(", ");

  function storedAsShown(label, card) {  // a reviewer's stored answer as the screen shows one
    if (!spanning) return sets ? (label ? label.split("|") : []) : label;
    const text = String(card.fields[spanField] ?? "");
    return (label ? label.split("|") : []).map((part) => {
      const [start, end, name] = part.split(":");
      return { start: Number(start), end: Number(end), label: name, text: text.slice(Number(start), Number(end)) };
    });
  }

  function show(card, message = null, progress = null) {
    current = card;
    if (progress) $("progress").textContent = `You answered ${progress.answered}` +
      (progress.waiting === null ? "" : ` · ${progress.waiting} waiting for people`);  // null: not counted yet
    $("card").hidden = !card;
    $("empty").hidden = Boolean(card);
    $("empty").textContent = message || "Nothing left to review. Thank you.";
    // the suggestion is chosen at first only where the machines are sure enough (card.preselect)
    const preselected = card && card.preselect ? card.suggestion : null;
    chosen = preselected;
    toggled = new Set(sets && Array.isArray(preselected) ? preselected : []);
    highlight();
    if (editor && card) editor.load(String(card.fields[spanField] ?? ""), preselected || [], card.blind ? null : card.label_confidence);
    for (const button of labelButtons) {
      if (spanning) break;  // a label set: how sure the machines are of each label
      const p = card && !card.blind && card.label_confidence ? card.label_confidence[button.dataset.label] : null;
      let badge = button.querySelector(".p");
      if (p == null) { if (badge) badge.remove(); continue; }
      if (!badge) { badge = document.createElement("span"); badge.className = "p"; button.append(badge); }
      badge.textContent = ` ${(p * 100).toFixed(0)} %`;
    }
    if (!card) return;
    $("item-id").textContent = card.external_id;
    const confidence = card.confidence == null ? "" : ` (calibrated confidence ${(card.confidence * 100).toFixed(0)} %)`;
    $("machine").textContent = card.blind ? "· blind item" :
      card.suggestion != null ? `· machines suggest ${shown(card.suggestion)}${confidence}` : "· no machine suggestion";
    $("why").textContent = card.reason ? `Why it is here: ${card.reason}.` : "";
    $("qualifying").hidden = !card.qualification;
    $("qualifying").textContent = card.qualification
      ? `Qualification: item ${card.qualification.answered + 1} of ${card.qualification.of}, shown without the machines' view.`
      : "";
    $("votes-box").hidden = card.blind;
    $("fields").replaceChildren(...Object.entries(card.fields).flatMap(([name, value]) => {
      const label = document.createElement("div");
      label.className = "field-name"; label.textContent = name;
      if (editor && name === spanField) return [label, editor.element];
      const text = document.createElement("div");
      text.className = "field"; text.textContent = value == null ? "" : String(value);
      return [label, text];
    }));
    const votes = $("votes");
    votes.replaceChildren();
    for (const vote of card.votes) {
      const row = votes.insertRow();
      cell(row, vote.annotator);
      cell(row, vote.label == null ? "abstained" : shown(vote.label));
      cell(row, vote.probability == null ? "" : `${(vote.probability * 100).toFixed(0)} %`);
      cell(row, vote.version);
    }
    const answers = $("answers");
    answers.hidden = !card.answers.length;
    answers.textContent = card.answers.length
      ? "Reviewers said: " + card.answers.map((a) => `${a.user}: ${a.label == null ? `don't know (${a.reason})` : shown(storedAsShown(a.label, card))}`).join("; ")
      : "";
    if (asGold) asGold.checked = false;
    if (asExample) asExample.checked = false;
  }

  async function run(action) {
    if (busy) return;
    busy = true;
    try { await action(); } catch (error) { say(error.message, true); } finally { busy = false; }
  }

  function submit(label, reason = null) {
    if (!current) return;
    const item = current;
    return run(async () => {
      const answer = label === null ? { label } : spanning ? { spans: label } : sets ? { labels: label } : { label };
      const data = await call("POST", "/api/queue/submit", { item_id: item.item_id, ...answer, reason, client_id: clientId() });
      if (!data) return;
      if (expert && label !== null && (asGold.checked || asExample.checked)) {
        const gold = spanning ? label.map((s) => `${s.start}:${s.end}:${s.label}`).join("|") : sets ? label.join("|") : label;
        await call("POST", `/api/items/${item.item_id}/gold`, { label: gold, split: asExample.checked ? "examples" : "calibration" });
      }
      const said = spanning && label !== null ? storedAsShown(label.map((s) => `${s.start}:${s.end}:${s.label}`).join("|"), item) : label;
      say(`Saved ${item.external_id}: ${label === null ? "I don't know" : shown(said)}.`);
      show(data.item, data.message, data.progress);
    });
  }

  const skip = () => current && run(async () => {
    const data = await call("POST", "/api/queue/skip", { item_id: current.item_id });
    if (data) { say(`Skipped ${current.external_id}.`); show(data.item, data.message, data.progress); }
  });

  const undo = () => run(async () => {
    const data = await call("POST", "/api/queue/undo");
    if (data) { say(`Undone: ${data.item.external_id} is back.`); show(data.item); }
  });

  function sendIdk() {
    const form = $("idk-form");
    const picked = form.querySelector('input[name="reason"]:checked');
    const reason = ($("idk-other").value.trim() || (picked && picked.value) || "").trim();
    if (!reason) { $("idk-error").textContent = "Say why: pick a reason or type one."; return; }  // in the dialog, seen
    $("idk-error").textContent = "";
    idk.close();
    form.reset();
    submit(null, reason);
  }

  function idkKeys(event) {
    if (event.key === "Enter") { event.preventDefault(); sendIdk(); return; }
    if (event.target.matches("input[type=text]")) return;  // typing a reason
    const radios = idk.querySelectorAll('input[name="reason"]');
    if (/^[1-9]$/.test(event.key) && radios[Number(event.key) - 1]) {
      event.preventDefault();
      radios[Number(event.key) - 1].checked = true;
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (idk.open) { idkKeys(event); return; }
    if (help.open) { if (event.key === "?") help.close(); return; }
    if (event.target.matches("input, textarea, select")) return;  // keys are off while a field has focus
    const key = event.key;
    if (editor && current && key !== "Enter" && editor.key(event)) { event.preventDefault(); return; }
    if (/^[1-9]$/.test(key) && labelButtons[Number(key) - 1]) {
      choose(labelButtons[Number(key) - 1].dataset.label);
    } else if (key === "Enter") {
      if (spanning) { if (current) submit(editor.value()); }
      else if (sets) { if (current) submit(labelButtons.map((b) => b.dataset.label).filter((l) => toggled.has(l))); }
      else if (chosen) submit(chosen);
    } else if (key === "s") skip();
    else if (key === "u") undo();
    else if (key === "i") { if (current) idk.showModal(); }
    else if (key === "?") help.showModal();
    else if (expert && key === "g") asGold.checked = !asGold.checked;
    else if (expert && key === "e") asExample.checked = !asExample.checked;
    else return;
    event.preventDefault();
  });

  for (const button of labelButtons) {
    button.addEventListener("click", () => { button.blur(); choose(button.dataset.label); });
  }
  $("idk-button").addEventListener("click", () => current && idk.showModal());
  $("skip-button").addEventListener("click", skip);
  $("undo-button").addEventListener("click", undo);
  $("idk-cancel").addEventListener("click", () => idk.close());
  $("idk-form").addEventListener("submit", (event) => { event.preventDefault(); sendIdk(); });

  run(async () => { const data = await call("GET", "/api/queue/next"); if (data) show(data.item, data.message, data.progress); });
})();
