// Login page: wait for the QR code to be scanned and confirmed in WeChat, then enter the console.
(function () {
  "use strict";
  var box = document.getElementById("qr-status");
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute("data-poll");
  var deadline = Date.now() + parseInt(box.getAttribute("data-ttl") || "0", 10) * 1000;
  var words = {
    waiting: ["请用微信扫一扫上面的二维码。", ""],
    scanned: ["已扫码。请在手机微信里回复 1 确认登录。", "good"],
    denied: ["没有登录：这个微信号没有后台权限，或在手机上取消了。请点“换一个二维码”重试。", "bad"],
    expired: ["二维码已过期，请点“换一个二维码”。", "bad"],
    used: ["这个二维码已经用过了，请点“换一个二维码”。", "bad"],
    none: ["请点“换一个二维码”。", "bad"]
  };
  function show(state) {
    var w = words[state] || words.waiting;
    box.textContent = w[0];
    box.className = "status " + w[1];
  }
  function tick() {
    if (Date.now() > deadline) { show("expired"); return; }
    fetch(url, {credentials: "same-origin", cache: "no-store", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (d) {
        if (d.state === "ok") {
          box.textContent = "登录成功，正在进入后台…";
          box.className = "status good";
          window.location.assign(d.next || "/staff/");
          return;
        }
        show(d.state);
        if (d.state === "waiting" || d.state === "scanned") { setTimeout(tick, 2000); }
      })
      .catch(function () { setTimeout(tick, 4000); });
  }
  setTimeout(tick, 1500);
})();
