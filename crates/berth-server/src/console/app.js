// The queue page's charts follow the samples (every 5 s) without reloading the page, so
// forms keep what was typed into them.
const charts = document.getElementById("charts");
if (charts) {
  setInterval(async () => {
    const response = await fetch(charts.dataset.src, { credentials: "same-origin" });
    if (response.ok) charts.innerHTML = await response.text();
  }, 5000);
}
