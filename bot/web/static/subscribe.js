// The 订阅通知 button (WeChat's wx-open-subscribe open tag): configure the JS-SDK with the signed
// settings the page carries as JSON, and say in words what the person chose. A file, not inline
// script: the pages' Content-Security-Policy allows scripts from this origin and WeChat's JS-SDK only.
(function () {
  var data = document.getElementById('vb-wx-config');
  if (!data || typeof wx === 'undefined') { return; }
  wx.config(JSON.parse(data.textContent));
  var msg = document.getElementById('vb-sub-msg');
  function say(t) { if (msg) { msg.textContent = t; } }
  document.querySelectorAll('.vb-sub-tag').forEach(function (b) {
    b.addEventListener('success', function (e) {
      var d = {};
      try { d = JSON.parse(e.detail.subscribeDetails || '{}'); } catch (x) { d = {}; }
      var ok = false;
      Object.keys(d).forEach(function (k) {
        var s = d[k];
        try { s = JSON.parse(s); } catch (x) { /* already an object */ }
        if (s && s.status === 'accept') { ok = true; }
      });
      say(ok ? '已开启。以后有通知会及时提醒您，可随时在微信“服务通知”里关闭。' : '您这次没有允许。需要时可以再点一次按钮。');
    });
    b.addEventListener('error', function (e) {
      say('暂时无法开启（错误码 ' + ((e.detail && e.detail.errCode) || '?') + '），请稍后再试。');
    });
  });
})();
