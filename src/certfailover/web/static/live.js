// Live updates: poll /status.json (the document `certfailover status --json` prints); when a
// site's certificates, states, health or notes change, fetch this page again and swap <main>
// in place (no reload). Without JavaScript the page is complete; it just does not move.
(function () {
  "use strict";
  var body = document.body;
  var every = parseFloat(body.getAttribute("data-refresh")) * 1000;
  if (!(every > 0) || !window.fetch) { return; }
  var live = document.getElementById("live");
  var stamp = document.getElementById("status-time");
  var last = null;

  function signature(doc) {
    return JSON.stringify((doc.sites || []).map(function (s) {
      return [s.site, s.active, s.standbys_healthy, s.notes,
              (s.certs || []).map(function (c) { return [c.id, c.state, c.health, c.summary]; })];
    }));
  }

  function swap() {
    return fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var main = fresh.getElementById("main");
        var t = fresh.getElementById("status-time");
        if (main) { document.getElementById("main").innerHTML = main.innerHTML; }
        if (t && stamp) { stamp.textContent = t.textContent; stamp.setAttribute("datetime", t.getAttribute("datetime")); }
      });
  }

  function poll() {
    fetch("/status.json", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (doc) {
        var sig = signature(doc);
        // first poll: the page may be older than the latest snapshot
        var changed = last === null ? doc.time !== body.getAttribute("data-time") : sig !== last;
        last = sig;
        if (live) { live.textContent = changed ? "(updated)" : "(live)"; }
        return changed ? swap() : null;
      })
      .catch(function (e) { if (live) { live.textContent = "(live updates paused: " + e.message + ")"; } })
      .then(function () { window.setTimeout(poll, every); });
  }
  poll();
}());
