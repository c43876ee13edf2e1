/* The book's subset pickers in the static HTML edition: no kernel, no network.
 *
 * Each <div class="mopoe-picker"> holds its checkboxes, one button row per control, an output area and, in a
 * <script type="application/json" class="mopoe-states">, every figure the chapter drew for every state when it
 * was executed. A change looks up the state's key (the option index of each control, then the ticked
 * modalities: "1|0,2") and shows the saved outputs. The keys are those of mopoe_lib.viz.widgets.state_key.
 */
(function () {
  "use strict";

  function render(output, items, empty) {
    output.textContent = "";
    if (items === null) {
      var hint = document.createElement("pre");
      hint.textContent = empty;
      output.appendChild(hint);
      return;
    }
    items.forEach(function (item) {
      if (item.type === "image") {
        var img = document.createElement("img");
        img.src = "data:" + item.mime + ";base64," + item.data;
        img.width = item.width;
        img.style.maxWidth = "100%";
        img.style.height = "auto";
        output.appendChild(img);
      } else {
        var pre = document.createElement("pre");
        pre.textContent = item.text;
        output.appendChild(pre);
      }
    });
  }

  function setUp(root) {
    var data = JSON.parse(root.querySelector("script.mopoe-states").textContent);
    var output = root.querySelector(".mopoe-output");
    var checks = Array.prototype.slice.call(root.querySelectorAll(".mopoe-checks input[type=checkbox]"));
    var rows = Array.prototype.slice.call(root.querySelectorAll(".mopoe-control"));

    function key() {
      var members = checks.filter(function (c) { return c.checked; })
                          .map(function (c) { return c.value; });
      if (members.length === 0) { return null; }
      var parts = rows.map(function (row) { return row.getAttribute("data-index"); });
      parts.push(members.join(","));
      return parts.join("|");
    }

    function update() {
      var k = key();
      root.setAttribute("data-state", k === null ? "" : k);
      render(output, k === null ? null : (data.states[k] || []), data.empty);
    }

    checks.forEach(function (c) { c.addEventListener("change", update); });
    rows.forEach(function (row) {
      var buttons = Array.prototype.slice.call(row.querySelectorAll("button"));
      buttons.forEach(function (button) {
        button.addEventListener("click", function () {
          buttons.forEach(function (b) { b.classList.remove("mopoe-active"); b.setAttribute("aria-pressed", "false"); });
          button.classList.add("mopoe-active");
          button.setAttribute("aria-pressed", "true");
          row.setAttribute("data-index", button.getAttribute("data-index"));
          update();
        });
      });
    });
    update();
    root.classList.add("mopoe-ready");
  }

  function setUpAll() {
    Array.prototype.forEach.call(document.querySelectorAll(".mopoe-picker"), setUp);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUpAll);
  } else {
    setUpAll();
  }
})();
