// Wide content that scrolls, and says so (see ngxlab.css).
//
// Every image of the article is put in a box of its own (div.ngx-wide inside
// div.ngx-wide-box), so that on a phone a figure can keep a legible size and
// scroll sideways instead of shrinking until its text cannot be read. Then
// every code or output block (pre) and every such box that is wider than its
// frame gets the class ngx-scrolls on its frame, which draws a fade and an
// arrow at the right edge; ngx-scrolled-end removes them once the reader has
// scrolled to the end. Runs on load and whenever the window's width changes.
(function () {
  "use strict";
  function wrapImages() {
    document.querySelectorAll(".bd-article img").forEach(function (img) {
      if (img.closest(".ngx-wide")) return;
      var box = document.createElement("div");
      box.className = "ngx-wide-box";
      var wide = document.createElement("div");
      wide.className = "ngx-wide";
      img.parentNode.insertBefore(box, img);
      box.appendChild(wide);
      wide.appendChild(img);
      // never stretched beyond the width it was drawn at
      var drawn = function () {
        if (img.naturalWidth) img.style.setProperty("--ngx-drawn-width", img.naturalWidth + "px");
      };
      if (img.complete) drawn(); else img.addEventListener("load", drawn);
    });
  }
  function scrollers() {
    return document.querySelectorAll(".bd-article pre, .bd-article .ngx-wide");
  }
  function mark(el) {
    var frame = el.parentElement;
    if (!frame) return;
    var wide = el.scrollWidth > el.clientWidth + 1;
    frame.classList.toggle("ngx-scrolls", wide);
    frame.classList.toggle("ngx-scrolled-end",
      wide && el.scrollLeft + el.clientWidth >= el.scrollWidth - 1);
  }
  function markAll() {
    scrollers().forEach(mark);
  }
  function start() {
    wrapImages();
    scrollers().forEach(function (el) {
      el.addEventListener("scroll", function () { mark(el); }, { passive: true });
    });
    markAll();
    var width = window.innerWidth;
    window.addEventListener("resize", function () {
      if (window.innerWidth !== width) {
        width = window.innerWidth;
        markAll();
      }
    });
    // web fonts and images change widths after the first layout
    window.addEventListener("load", markAll);
    document.querySelectorAll(".bd-article img").forEach(function (img) {
      if (!img.complete) img.addEventListener("load", function () { mark(img.parentElement); });
    });
    document.documentElement.setAttribute("data-ngx-scroll-marked", "1");
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
