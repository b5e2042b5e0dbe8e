// A button marked data-once submits its form once: a second click while the first request is on
// its way does nothing. The server is idempotent anyway; this only spares people the doubt.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.submitted) { event.preventDefault(); return; }
  form.dataset.submitted = "1";
  form.querySelectorAll("button[data-once]").forEach((b) => {
    // Disabled after the submit has been dispatched, so the button's own value still goes out.
    setTimeout(() => { b.disabled = true; }, 0);
  });
});
