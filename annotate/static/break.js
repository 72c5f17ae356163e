// Counts the enforced rest down, then returns to the trials (the server decides when it ends).
(function () {
  "use strict";
  const countdown = document.getElementById("countdown");
  let left = parseInt(countdown.dataset.seconds, 10);
  setInterval(() => {
    left = Math.max(0, left - 1);
    countdown.textContent = left;
    if (left === 0) location.href = countdown.dataset.next;
  }, 1000);
})();
