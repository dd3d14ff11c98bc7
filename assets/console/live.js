// civicast console: refreshes each element marked data-live="URL" data-every="SECONDS" with
// the HTML fragment at URL, without a reload. The page reads the same without this script.
(function () {
  "use strict";
  function refresh(el) {
    var url = el.getAttribute("data-live");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected || !r.ok) { throw new Error("status " + r.status); }
        return r.text();
      })
      .then(function (html) { el.innerHTML = html; el.removeAttribute("data-stale"); })
      .catch(function () { el.setAttribute("data-stale", "true"); });
  }
  document.querySelectorAll("[data-live]").forEach(function (el) {
    var every = parseInt(el.getAttribute("data-every"), 10) || 5;
    setInterval(function () { if (!document.hidden) { refresh(el); } }, every * 1000);
  });
})();
