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
  display.setAttribute("aria-expanded", "false");
  option.closest(".options").innerHTML = "";
  display.focus();
}

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
    display.closest(".reference").querySelector("[data-ref-value]").value = "";
    display.setAttribute("aria-expanded", "true");
  }
});
