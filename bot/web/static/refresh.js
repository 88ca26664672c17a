// Live parts of a page (a call-up board, a notice's delivery): every data-refresh-s seconds the element's
// content is replaced by its data-refresh-url (the same server-rendered, escaped HTML). Stops when the
// new content carries data-refresh-stop; a lost login reloads the page (which then asks to log in).
(function () {
  "use strict";
  if (!window.fetch) { return; }
  var els = document.querySelectorAll("[data-refresh-url]");
  Array.prototype.forEach.call(els, function (el) {
    var url = el.getAttribute("data-refresh-url");
    var every = parseInt(el.getAttribute("data-refresh-s") || "15", 10) * 1000;
    var stamp = document.getElementById(el.getAttribute("data-refresh-stamp") || "");
    function schedule() { setTimeout(load, every); }
    function load() {
      if (document.hidden) { schedule(); return; }
      fetch(url, {credentials: "same-origin", cache: "no-store", redirect: "manual"})
        .then(function (r) {
          if (r.type === "opaqueredirect" || r.status === 401 || r.status === 403) { window.location.reload(); throw 0; }
          if (r.status !== 200) { throw r.status; }
          return r.text();
        })
        .then(function (html) {
          el.innerHTML = html;
          if (stamp) { stamp.textContent = new Date().toTimeString().slice(0, 8); }
          if (!el.querySelector("[data-refresh-stop]")) { schedule(); }
        })
        .catch(function () { schedule(); });
    }
    schedule();
  });
})();
