// Staff console: small progressive enhancements; every page works without this file.
(function () {
  "use strict";
  // "全选" checkbox: ticks every checkbox named ids in its form.
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.hasAttribute && t.hasAttribute("data-select-all") && t.form) {
      var boxes = t.form.querySelectorAll("input[type=checkbox][name=ids]");
      for (var i = 0; i < boxes.length; i++) { boxes[i].checked = t.checked; }
    }
    update();
  });
  // Fields that only matter for one choice (data-show-when="audience=role") show when it is picked.
  function update() {
    var parts = document.querySelectorAll("[data-show-when]");
    for (var i = 0; i < parts.length; i++) {
      var rule = parts[i].getAttribute("data-show-when").split("=");
      var picked = document.querySelector("input[type=radio][name='" + rule[0] + "']:checked");
      parts[i].hidden = !(picked && picked.value === rule[1]);
    }
  }
  update();
})();
