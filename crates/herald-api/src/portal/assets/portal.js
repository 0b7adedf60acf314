// Herald tenant portal: progressive enhancements only. Every page works without this file.
(function () {
  "use strict";
  // Topic picker: "All topics (*)" makes the individual topics irrelevant.
  function syncTopics(all) {
    var box = all.closest("fieldset");
    if (!box) return;
    box.querySelectorAll("input[name='topics']").forEach(function (c) {
      if (c !== all) c.disabled = all.checked;
    });
  }
  document.querySelectorAll("input[name='topics'][value='*']").forEach(function (all) {
    syncTopics(all);
    all.addEventListener("change", function () { syncTopics(all); });
  });
  // Topic catalog: filter as you type (the form still works as a server-side search).
  var search = document.querySelector("[data-topic-search]");
  if (search) {
    var status = document.querySelector("[data-topic-count]");
    search.addEventListener("input", function () {
      var q = search.value.trim().toLowerCase();
      var shown = 0;
      document.querySelectorAll("[data-topic]").forEach(function (el) {
        var hit = !q || el.getAttribute("data-topic").toLowerCase().indexOf(q) !== -1;
        el.hidden = !hit;
        if (hit) shown++;
      });
      if (status) status.textContent = shown + (shown === 1 ? " topic" : " topics");
    });
  }
  // Copy buttons for signing secrets.
  document.querySelectorAll("[data-copy]").forEach(function (b) {
    b.hidden = false;
    b.addEventListener("click", function () {
      var el = document.getElementById(b.getAttribute("data-copy"));
      if (el && navigator.clipboard) {
        navigator.clipboard.writeText(el.textContent).then(function () { b.textContent = "Copied"; });
      }
    });
  });
})();
