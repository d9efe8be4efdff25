/* Tourbook site: the hold countdown and the live seat count's effect on the booking form.
   Everything works without it; this only keeps the page current. */
(function () {
  "use strict";
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function tick() {
    var els = document.querySelectorAll("[data-countdown]");
    for (var i = 0; i < els.length; i++) {
      var left = Math.floor((Date.parse(els[i].getAttribute("data-countdown")) - Date.now()) / 1000);
      if (isNaN(left)) continue;
      els[i].textContent = left > 0 ? Math.floor(left / 60) + ":" + two(left % 60) + " more" : "no longer: the hold expired";
    }
  }
  function seatsChanged() {
    var seats = document.getElementById("seats"), form = document.getElementById("book-form");
    if (!seats || !form) return;
    var left = parseInt(seats.getAttribute("data-seats"), 10);
    form.hidden = !(left > 0);
    var select = form.querySelector("select");
    if (select) {
      for (var i = 0; i < select.options.length; i++) select.options[i].disabled = parseInt(select.options[i].value, 10) > left;
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    if (document.querySelector("[data-countdown]")) setInterval(tick, 1000);
  });
  document.addEventListener("htmx:afterSettle", seatsChanged);
})();
