// The Updates page's bundle upload (Medgate fleet console, ours, Apache-2.0): posts the chosen
// .mgb file as the raw body of POST /api/v1/bundles with the session's CSRF token, and says
// what the fleet answered: stored, or refused with the code and the reason.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("bundle-upload");
  if (!form) return;
  var out = document.getElementById("bundle-upload-result");
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var input = form.querySelector("input[type=file]");
    var file = input && input.files && input.files[0];
    if (!file) return;
    out.className = "";
    out.textContent = "Uploading and verifying " + file.name + " (" + file.size + " bytes)…";
    fetch("/api/v1/bundles", {
      method: "POST",
      body: file,
      credentials: "same-origin",
      headers: { "Content-Type": "application/octet-stream", "X-CSRF-Token": form.dataset.csrf },
    })
      .then(function (r) {
        return r.json().then(
          function (j) { return { ok: r.ok, status: r.status, body: j }; },
          function () { return { ok: r.ok, status: r.status, body: {} }; }
        );
      })
      .then(function (a) {
        if (a.ok) {
          out.className = "finding ok";
          out.textContent = "Stored: " + a.body.product + " " + a.body.version + ". Reloading…";
          window.setTimeout(function () { window.location.reload(); }, 800);
        } else {
          out.className = "finding bad";
          // The fleet's message already starts "bundle refused (code): …" for a refused bundle.
          var why = (a.body.error || "the fleet did not say why").replace(/^bundle refused \([a-z_]+\): /, "");
          out.textContent = "Refused" + (a.body.code ? " (" + a.body.code + ")" : " (HTTP " + a.status + ")") +
            ": " + why + ". Nothing was stored.";
        }
      })
      .catch(function (err) {
        out.className = "finding bad";
        out.textContent = "The upload did not reach the fleet: " + err + ".";
      });
  });
});
