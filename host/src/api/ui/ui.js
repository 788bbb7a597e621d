// Weft's dashboard: keeps the page's main part live. The node renders it again whenever it
// changes and sends it over server-sent events (one JSON string per event); this swaps it in.
// The browser's EventSource reconnects by itself after a node restart. A page the browser
// hides (navigated away from, or kept for "back") closes its stream, since a browser allows
// only a few connections per host; shown again, it reopens it.
"use strict";
(() => {
  const main = document.getElementById("live");
  const state = document.getElementById("live-state");
  if (!main || !main.dataset.live) return;
  let events = null;
  const open = () => {
    events = new EventSource(main.dataset.live);
    events.onmessage = (event) => {
      main.innerHTML = JSON.parse(event.data);
      document.body.dataset.live = "on";
      if (state) state.textContent = "Last update " + new Date().toLocaleTimeString() + ".";
    };
    events.onerror = () => {
      document.body.dataset.live = "off";
      if (state) state.textContent = "Not connected to the node; retrying.";
    };
  };
  const close = () => {
    if (events) events.close();
    events = null;
  };
  window.addEventListener("pagehide", close);
  window.addEventListener("pageshow", () => { if (!events) open(); });
  // A form sent from the page leaves it: its stream is not needed while the answer comes.
  document.addEventListener("submit", close);
  open();
})();
