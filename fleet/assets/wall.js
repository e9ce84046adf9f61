// The wall's live client (ours, no dependency; served with SRI, allowed by the console's CSP).
// - EventSource on the page's data-events URL: `snapshot` replaces the live fragment (the
//   server's HTML, escaped by maud), `beat` every 2 s, `revoked` ends the wall.
// - No event for 6 s: the page says "FEED LOST — data from HH:MM:SS" and greys the tiles.
// - On error the stream is closed and re-opened with backoff (1 s doubling to 5 s), after a
//   check of the page itself: 404 means the link was revoked meanwhile.
// - The events URL carries this screen's UTC offset (`tz`, minutes, Date.getTimezoneOffset(),
//   read at each (re)connect): the server's "today" starts at this screen's local midnight.
// - Each tile's "data N old" and each alarm's "for N min" are kept current from the fleet's
//   clock (offset taken from events).
// - Night mode: data-night="on|off|auto"; auto dims between data-night-from and data-night-to
//   (local hours of this screen).
// For the browser tests: window.__wall holds the state, snapshots received and, per snapshot
// that follows a change, the change → pixels latency (ms).
(function () {
  'use strict';
  var body = document.body;
  var base = body.dataset.events;
  var live = document.getElementById('live');
  var feed = document.getElementById('feed');
  var clock = document.getElementById('clock');
  var STALE_MS = 6000;
  var lastEvent = Date.now();
  var dataAt = Number(body.dataset.at) || Date.now();
  var offset = 0; // fleet clock - this clock
  var backoff = 1000;
  var es = null;
  var ended = false;
  var state = { state: 'connecting', snapshots: 0, beats: 0, latencies: [], opened: 0 };
  window.__wall = state;

  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function hms(ms) {
    var d = new Date(ms);
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  function span(secs) {
    if (secs < 60) return secs + ' s';
    if (secs < 7200) return Math.floor(secs / 60) + ' min';
    if (secs < 172800) return Math.floor(secs / 3600) + ' h';
    return Math.floor(secs / 86400) + ' days';
  }

  function ages() {
    var now = Date.now() + offset;
    var els = live.querySelectorAll('.t-age[data-at]');
    for (var i = 0; i < els.length; i++) {
      var at = Number(els[i].getAttribute('data-at'));
      var secs = Math.max(0, Math.floor((now - at) / 1000));
      els[i].textContent = 'data ' + span(secs) + ' old';
    }
    var since = live.querySelectorAll('.a-for[data-since]');
    for (var j = 0; j < since.length; j++) {
      var from = Number(since[j].getAttribute('data-since'));
      since[j].textContent = 'for ' + span(Math.max(0, Math.floor((now - from) / 1000)));
    }
  }

  function eventsUrl() {
    return base + (base.indexOf('?') < 0 ? '?' : '&') + 'tz=' + new Date().getTimezoneOffset();
  }

  function night() {
    var mode = body.dataset.night;
    var on = mode === 'on';
    if (mode === 'auto' && body.dataset.nightFrom !== undefined && body.dataset.nightTo !== undefined) {
      var f = Number(body.dataset.nightFrom);
      var t = Number(body.dataset.nightTo);
      var h = new Date().getHours();
      on = f < t ? (h >= f && h < t) : (h >= f || h < t);
    }
    document.documentElement.classList.toggle('night', on);
  }

  function seen(atMs) {
    lastEvent = Date.now();
    if (typeof atMs === 'number') offset = atMs - Date.now();
  }

  function tick() {
    if (ended) return;
    clock.textContent = hms(Date.now());
    var stale = Date.now() - lastEvent > STALE_MS;
    if (stale) {
      feed.textContent = 'FEED LOST — data from ' + hms(dataAt - offset) + ' — reconnecting…';
      feed.hidden = false;
      state.state = 'lost';
    } else if (!feed.hidden) {
      feed.hidden = true;
    }
    body.classList.toggle('stale', stale);
    ages();
    night();
  }

  function invalid() {
    ended = true;
    state.state = 'revoked';
    if (es) { es.close(); es = null; }
    while (body.firstChild) body.removeChild(body.firstChild);
    body.className = 'invalid';
    var box = document.createElement('main');
    box.className = 'invalid-box';
    var h = document.createElement('h1');
    h.textContent = 'This display link is not valid any more';
    var p = document.createElement('p');
    p.textContent = 'It was revoked. Ask a Medgate fleet admin for a new display link (console: Wall displays).';
    box.appendChild(h);
    box.appendChild(p);
    body.appendChild(box);
  }

  function onSnapshot(e) {
    var m;
    try { m = JSON.parse(e.data); } catch (err) { return; }
    seen(m.at_ms);
    live.innerHTML = m.html;
    dataAt = m.at_ms;
    state.snapshots++;
    state.state = 'live';
    ages();
    if (m.change_ms > 0) {
      // After the next paint: the change is in pixels.
      requestAnimationFrame(function () {
        setTimeout(function () {
          state.latencies.push(Date.now() + offset - m.change_ms);
          if (state.latencies.length > 1000) state.latencies.shift();
        }, 0);
      });
    }
    tick();
  }

  function retry() {
    if (ended) return;
    // The page answers 404 once the link is revoked; anything else: try the stream again.
    fetch(location.pathname, { method: 'HEAD', cache: 'no-store' }).then(function (r) {
      if (r.status === 404) { invalid(); return; }
      setTimeout(open, backoff);
      backoff = Math.min(backoff * 2, 5000);
    }, function () {
      setTimeout(open, backoff);
      backoff = Math.min(backoff * 2, 5000);
    });
  }

  function open() {
    if (ended) return;
    es = new EventSource(eventsUrl());
    es.addEventListener('open', function () { backoff = 1000; state.opened++; });
    es.addEventListener('snapshot', onSnapshot);
    es.addEventListener('beat', function (e) {
      var m; try { m = JSON.parse(e.data); } catch (err) { m = {}; }
      seen(m.at_ms);
      state.beats++;
      tick();
    });
    es.addEventListener('revoked', invalid);
    es.onerror = function () {
      if (es) { es.close(); es = null; }
      retry();
    };
  }

  night();
  tick();
  setInterval(tick, 500);
  open();
}());
