// DIBOP console: progressive enhancement only. Every page works without
// this script (forms post, links navigate); with it, destructive actions
// ask first, toasts fade, copy buttons copy, filters apply as you type.
(function () {
  "use strict";

  // Toasts: the server renders them into .toasts; they leave after a while
  // or when closed.
  function dismiss(toast) {
    toast.remove();
  }
  document.querySelectorAll(".toast").forEach(function (toast) {
    var close = toast.querySelector("button");
    if (close) close.addEventListener("click", function () { dismiss(toast); });
    setTimeout(function () { dismiss(toast); }, 6000);
  });

  // Confirm dialogs: a form with data-confirm asks before it submits.
  var dialog = document.getElementById("confirm");
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.confirmed === "yes" || !dialog) return;
      event.preventDefault();
      dialog.querySelector("[data-confirm-title]").textContent = form.dataset.confirmTitle || "Are you sure?";
      dialog.querySelector("[data-confirm-text]").textContent = form.dataset.confirm;
      var ok = dialog.querySelector("[data-confirm-ok]");
      ok.textContent = form.dataset.confirmOk || "Confirm";
      dialog.returnValue = "";
      dialog.showModal();
      dialog.addEventListener("close", function once() {
        dialog.removeEventListener("close", once);
        if (dialog.returnValue === "ok") {
          form.dataset.confirmed = "yes";
          form.requestSubmit();
        }
      });
    });
  });

  // Busy buttons: a submitted form's button shows it is working.
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (event.defaultPrevented) return;
      var button = event.submitter || form.querySelector("button[type=submit]");
      if (button) button.setAttribute("aria-busy", "true");
    });
  });

  // Copy buttons: data-copy names the element whose text to copy.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.getElementById(button.dataset.copy);
      if (!source || !navigator.clipboard) return;
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        var label = button.textContent;
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
  });

  // Filters: a select applies at once (the search box on Enter).
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.requestSubmit(); });
  });
})();
