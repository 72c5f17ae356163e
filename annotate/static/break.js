// The break page's countdown (a static file: the Content-Security-Policy allows no inline script).
(() => {
  const counter = document.getElementById("countdown");
  let left = Number(counter.dataset.seconds);
  setInterval(() => {
    left = Math.max(0, left - 1);
    counter.textContent = left;
    if (left === 0) location.href = counter.dataset.next;
  }, 1000);
})();
