// The definitions editor: CodeMirror over the textarea (the form still posts the textarea, so the
// page works without it), YAML highlighting, and the server's check of the whole definition set
// as you type, each error marked at its line and column and listed under the editor.
(function () {
  const textarea = document.getElementById("definition-text");
  if (!textarea || !window.CodeMirror) return;
  const token = document.querySelector("meta[name=csrf-token]").content;
  const problems = document.getElementById("problems");
  // Checks run side by side on the server and may answer out of order: only the latest one's answer is shown
  // (an earlier one, of the text before the last keystroke, would otherwise overwrite it). Declared before the
  // editor, whose lint runs the first check as it is built.
  let checks = 0;
  const review = () => { editor.save(); textarea.form.requestSubmit(); };
  const label = textarea.labels[0];
  const editor = CodeMirror.fromTextArea(textarea, {
    mode: "yaml", lineNumbers: true, indentUnit: 2, tabSize: 2, gutters: ["CodeMirror-lint-markers"],
    lint: {getAnnotations: check, async: true, delay: 400, highlightLines: true},
    extraKeys: {Tab: (cm) => cm.execCommand("insertSoftTab"), "Ctrl-Enter": review, "Cmd-Enter": review},
    screenReaderLabel: label.textContent,  // CodeMirror types into a textarea of its own: it gets the label's name
  });
  window.definitionEditor = editor;
  accessible(editor, label);
  if (textarea.dataset.line) jump(Number(textarea.dataset.line), 1);

  // The label focuses the editor (it names the hidden textarea); the scrolling area is a named region
  // a keyboard user can reach with Tab and scroll with the arrow keys without moving the cursor.
  // Tab indents in the editor, so Esc then Tab (or Shift+Tab) leaves it: no keyboard trap.
  function accessible(cm, label) {
    label.addEventListener("click", (event) => { event.preventDefault(); cm.focus(); });
    let leaving = false;
    cm.on("keydown", (_, event) => {
      if (event.key === "Escape") leaving = true;
      else if (event.key === "Tab" && leaving) event.codemirrorIgnore = true;  // the browser moves the focus
      else if (event.key !== "Shift") leaving = false;
    });
    cm.on("blur", () => { leaving = false; });
    const scroller = cm.getScrollerElement();
    scroller.tabIndex = 0;
    scroller.setAttribute("role", "region");
    scroller.setAttribute("aria-label", `${label.textContent}, scrolling view`);
  }

  function check(text, update) {
    const mine = ++checks;
    problems.dataset.state = "checking";
    fetch(textarea.dataset.check, {method: "POST", body: text, headers: {"X-CSRFToken": token, "Content-Type": "text/plain"}})
      .then((response) => response.json())
      .then((answer) => {
        if (mine !== checks) return;
        update(answer.errors.map((e) => ({
          from: CodeMirror.Pos(e.line - 1, e.column - 1), to: CodeMirror.Pos(e.line - 1, e.column + 40),
          message: e.message, severity: "error",
        })));
        show(answer);
      })
      .catch(() => { if (mine === checks) problems.dataset.state = "unknown"; });
  }

  function show(answer) {
    const list = problems.querySelector("ol");
    list.replaceChildren();
    for (const e of answer.errors) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = "#";
      link.dataset.line = e.line;
      link.dataset.column = e.column;
      link.textContent = `Line ${e.line}, column ${e.column}`;
      item.append(link, `: ${e.message}`);
      list.append(item);
    }
    for (const e of answer.elsewhere) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = `${problems.dataset.fileUrl}${e.path}?line=${e.line}`;
      link.textContent = `${e.path}:${e.line}:${e.column}`;
      item.append(link, `: ${e.message}`);
      list.append(item);
    }
    const count = answer.errors.length + answer.elsewhere.length;
    problems.querySelector(".status").textContent = count ? `${count} problem(s): nothing can be applied until they are fixed.` : "No problems.";
    problems.dataset.state = count ? "invalid" : "valid";
  }

  function jump(line, column) {
    editor.focus();
    editor.setCursor({line: line - 1, ch: column - 1});
    editor.scrollIntoView(null, 100);
  }

  problems.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-line]");
    if (!link) return;
    event.preventDefault();
    jump(Number(link.dataset.line), Number(link.dataset.column));
  });
})();
