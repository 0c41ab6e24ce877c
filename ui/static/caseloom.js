// Progressive enhancement only: every page works without it.
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-dialog]");
  if (opener) {
    event.preventDefault(); // the button's own form opens the action's page when there is no script
    document.getElementById(opener.dataset.dialog).showModal();
    return;
  }
  if (event.target.closest("[data-close]")) {
    event.target.closest("dialog").close();
    return;
  }
  const option = event.target.closest(".options [role=option]");
  if (option) pick(option);
});

function pick(option) {
  const box = option.closest(".reference");
  box.querySelector("[data-ref-value]").value = option.dataset.sysId;
  const display = box.querySelector("[data-ref-display]");
  display.value = option.dataset.display;
  closeOptions(box);
  display.dataset.picked = "1"; // focus comes back to the box: it must not open the matches again
  display.focus();
}

function closeOptions(box) {
  box.querySelector("[data-ref-display]")?.setAttribute("aria-expanded", "false");
  const options = box.querySelector(".options");
  if (options) options.innerHTML = "";
}

// The matches a picked box would fetch on getting focus back are not asked for.
document.addEventListener("htmx:confirm", (event) => {
  const display = event.detail.elt;
  if (display.dataset?.picked && event.detail.triggeringEvent?.type === "focus") {
    event.preventDefault();
    delete display.dataset.picked;
  }
});

// Leaving a reference box (Tab to the next field, a click elsewhere) closes its matches.
document.addEventListener("focusout", (event) => {
  const box = event.target.closest?.(".reference");
  if (box && !box.contains(event.relatedTarget)) closeOptions(box);
});

document.addEventListener("keydown", (event) => {
  const display = event.target.closest("[data-ref-display]");
  const list = event.target.closest(".options");
  const options = (display || list)?.closest(".reference")?.querySelectorAll(".options [role=option]");
  if (!options || !options.length) return;
  const items = Array.from(options);
  const index = items.indexOf(document.activeElement);
  if (event.key === "ArrowDown") {
    event.preventDefault();
    items[Math.min(index + 1, items.length - 1)].focus();
  } else if (event.key === "ArrowUp" && list) {
    event.preventDefault();
    (index > 0 ? items[index - 1] : list.closest(".reference").querySelector("[data-ref-display]")).focus();
  } else if (event.key === "Enter" && list && index >= 0) {
    event.preventDefault();
    pick(items[index]);
  } else if (event.key === "Escape") {
    list?.closest(".reference").querySelector("[data-ref-display]").focus();
    (list || display.closest(".reference").querySelector(".options")).innerHTML = "";
  }
});

// A form (or its submit button) with data-confirm asks before it is sent: the inline
// onsubmit="return confirm(...)" the Content-Security-Policy forbids. Listening in the capture
// phase, a "no" stops the submission before any other handler (htmx's included) sees it.
document.addEventListener("submit", (event) => {
  const question = event.submitter?.dataset.confirm || event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
    event.stopPropagation();
  }
}, true);

// Typing over a picked reference clears the stored value until a match is picked again.
document.addEventListener("input", (event) => {
  const display = event.target.closest("[data-ref-display]");
  if (display) {
    delete display.dataset.picked;
    display.closest(".reference").querySelector("[data-ref-value]").value = "";
    display.setAttribute("aria-expanded", "true");
  }
});

// -- Lists (caseloom.web.ui.lists) --------------------------------------------------------------
// A reference picker whose input is not named `<field>__display` (a filter row's) sends what was
// typed as the parameter its data-ref-query names, which the type-ahead endpoint reads.
document.addEventListener("htmx:configRequest", (event) => {
  const param = event.detail.elt.dataset?.refQuery;
  if (param) event.detail.parameters[param] = event.detail.elt.value;
});

// "Select all on this page", and once every row is ticked, the offer to select all matching the
// filter (it chooses the bulk edit's "All N matching" scope). Without script the bulk edit's own
// radio buttons do the same.
document.addEventListener("change", (event) => {
  const form = event.target.closest("#list-form");
  if (!form || event.target.type !== "checkbox") return;
  const rows = Array.from(form.querySelectorAll("input[name=sys_id]"));
  const all = form.querySelector("[data-select-page]");
  if (event.target === all) rows.forEach((box) => { box.checked = all.checked; });
  const ticked = rows.length > 0 && rows.every((box) => box.checked);
  if (all) all.checked = ticked;
  const offer = form.querySelector("[data-select-matching]");
  if (offer) offer.hidden = !ticked;
  if (!ticked && offer) { // back to the page's own rows
    chooseScope("selected");
    const note = offer.querySelector("[data-select-note]");
    note.textContent = note.dataset.pageNote || note.textContent;
    offer.querySelector("[data-select-all-matching]")?.removeAttribute("hidden");
  }
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-select-all-matching]");
  if (!button) return;
  chooseScope("filter");
  const note = button.closest("[data-select-matching]").querySelector("[data-select-note]");
  note.dataset.pageNote = note.textContent;
  note.textContent = `All ${button.dataset.total} records matching the filter are selected.`;
  button.hidden = true;
  const bulk = document.getElementById("bulk");
  if (bulk) bulk.open = true;
});

function chooseScope(scope) {
  const radio = document.querySelector(scope === "filter" ? "[data-scope-filter]" : "[data-scope-selected]");
  if (radio) radio.checked = true;
}

// Reference previews (role=tooltip, shown on hover or focus by CSS): Escape hides the one showing
// until the pointer or the focus comes back to its link.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  document.querySelectorAll(".ref-link:hover, .ref-link:focus-within").forEach((link) => link.classList.add("dismissed"));
});
for (const type of ["mouseover", "focusin"]) {
  document.addEventListener(type, (event) => {
    const link = event.target.closest?.(".ref-link.dismissed");
    if (link && !link.contains(event.relatedTarget)) link.classList.remove("dismissed");
  });
}

// A filter row's operator changed to one that takes another shape of value (none, one, a list):
// the row is drawn again for it (its select listens for "redraw"); otherwise its value input stays.
document.addEventListener("change", (event) => {
  const op = event.target.closest(".filter-row select[name=f_op]");
  if (!op || !window.htmx) return;
  if (op.selectedOptions[0]?.dataset.shape !== op.closest(".filter-row").dataset.shape) htmx.trigger(op, "redraw");
});
