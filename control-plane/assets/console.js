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
  function arm(toast) {
    var close = toast.querySelector("button");
    if (close) close.addEventListener("click", function () { dismiss(toast); });
    setTimeout(function () { dismiss(toast); }, 6000);
  }
  document.querySelectorAll(".toast").forEach(arm);
  // A toast raised here (after a background request).
  function toast(text) {
    var box = document.querySelector(".toasts");
    if (!box) return;
    var t = document.createElement("div");
    t.className = "toast";
    var span = document.createElement("span");
    span.textContent = text;
    var close = document.createElement("button");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    t.appendChild(span);
    t.appendChild(close);
    box.appendChild(t);
    arm(t);
  }

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

  // Partial updates: a button with data-partial posts its form in the
  // background and puts the answer (an HTML fragment the server rendered
  // and escaped) into the element it names; the rest of the page, with what
  // was typed into it (secrets included), stays as it is.
  document.querySelectorAll("button[data-partial]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      var form = button.form;
      var target = document.getElementById(button.dataset.partial);
      if (!form || !target || !window.fetch) return;
      event.preventDefault();
      var data = new FormData(form);
      if (button.name) data.set(button.name, button.value);
      button.setAttribute("aria-busy", "true");
      target.setAttribute("aria-busy", "true");
      fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(data),
        headers: { "X-Console-Partial": "1" },
        credentials: "same-origin"
      }).then(function (response) {
        return response.text();
      }).then(function (html) {
        target.innerHTML = html;
        var ok = target.querySelector("[data-toast]");
        if (ok) toast(ok.dataset.toast);
      }).catch(function () {
        target.innerHTML = "";
        var p = document.createElement("div");
        p.className = "alert alert-error";
        p.setAttribute("role", "alert");
        p.textContent = "The request did not reach the console: check your network and try again.";
        target.appendChild(p);
      }).then(function () {
        button.removeAttribute("aria-busy");
        target.removeAttribute("aria-busy");
      });
    });
  });

  // Filters: a select applies at once (the search box on Enter).
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.requestSubmit(); });
  });
})();
