// Medgate console: the device page's telemetry charts. Ours (Apache-2.0), served from the binary
// and named by the page with its SRI hash; no inline script anywhere (the page's CSP forbids it).
//
// The page has <section id="charts" data-src="/devices/ID/charts.json?range=hour"
// data-refresh-secs="30"> holding one <figure class="chart" data-chart="NAME"> per chart. This
// fetches the JSON (columns: t, then one array per series, null for a gap — the server has
// already downsampled the range), draws each chart with uPlot, and fetches again every
// data-refresh-secs. Colours come from the style sheet's variables, so light and dark themes
// apply.
(function () {
  'use strict';

  var CHARTS = {
    rates: { unit: '/min', series: [['received_per_min', 'received', '--chart-1'], ['forwarded_per_min', 'forwarded', '--chart-2']] },
    queue: { unit: '', series: [['queue_depth', 'waiting', '--chart-3']] },
    oldest: { unit: 's', series: [['oldest_age_secs', 'oldest waiting', '--chart-4']] },
    disk: { unit: '%', scale: [0, 100], series: [['disk_used_percent', 'disk used', '--chart-5']] },
    latency: { unit: 'ms', series: [['latency_p50_ms', 'median', '--chart-1'], ['latency_p90_ms', '90th percentile', '--chart-2']] },
  };

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
  }

  function last(values) {
    for (var i = values.length - 1; i >= 0; i--) {
      if (values[i] !== null && values[i] !== undefined) return values[i];
    }
    return null;
  }

  function start(section) {
    var src = section.getAttribute('data-src');
    var refresh = parseInt(section.getAttribute('data-refresh-secs') || '30', 10);
    var plots = {};
    var range = { from: 0, to: 1 };
    var status = section.querySelector('.chart-status');

    function pad(n) { return n < 10 ? '0' + n : '' + n; }
    function tick(v, span) {
      var d = new Date(v * 1000);
      var hm = pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes());
      return span > 2 * 86400 ? ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'][d.getUTCDay()] + ' ' + hm : hm;
    }

    function opts(name, def, width) {
      var text = css('--muted');
      var grid = css('--line');
      var series = [{ label: 'Time (UTC)', value: function (u, v) {
        if (v === null || v === undefined) return '–';
        var d = new Date(v * 1000);
        return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' + tick(v, 0);
      } }];
      def.series.forEach(function (s) {
        series.push({ label: s[1], stroke: css(s[2]), width: 2, spanGaps: false, points: { show: false } });
      });
      return {
        width: width,
        height: 170,
        scales: def.scale
          ? { x: { time: true, range: function () { return [range.from, range.to]; } }, y: { range: def.scale } }
          : { x: { time: true, range: function () { return [range.from, range.to]; } } },
        series: series,
        legend: { live: true },
        axes: [
          // Times in UTC, as on every other console page; 24-hour clock, weekday for the week.
          // Ticks on whole minutes or coarser: the labels show minutes, so finer ticks would
          // repeat a label ("11:51 11:51") on a new device's few minutes of data.
          { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, space: 70,
            incrs: [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800],
            values: function (u, vals) { return vals.map(function (v) { return tick(v, range.to - range.from); }); } },
          { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 72,
            values: function (u, vals) { return vals.map(function (v) { return v + (def.unit && def.unit !== '/min' ? ' ' + def.unit : ''); }); } },
        ],
      };
    }

    function draw(data) {
      range.from = data.from;
      range.to = data.to;
      section.querySelectorAll('figure.chart').forEach(function (fig) {
        var name = fig.getAttribute('data-chart');
        var def = CHARTS[name];
        if (!def) return;
        var cols = [data.t];
        def.series.forEach(function (s) { cols.push(data[s[0]] || []); });
        var now = fig.querySelector('.latest');
        if (now) {
          now.textContent = def.series.map(function (s) {
            var v = last(data[s[0]] || []);
            return s[1] + ' ' + (v === null ? '–' : v + (def.unit ? ' ' + def.unit : ''));
          }).join(' · ');
        }
        var box = fig.querySelector('.plot');
        var width = Math.max(240, box.clientWidth);
        if (plots[name]) {
          plots[name].setData(cols);
        } else {
          plots[name] = new uPlot(opts(name, def, width), cols, box);
        }
      });
      if (status) {
        status.textContent = data.t.length === 0
          ? 'No telemetry in this range yet.'
          : data.t.length + ' points, refreshed every ' + refresh + ' s; times in UTC.';
      }
    }

    function load() {
      fetch(src, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then(function (r) {
          if (!r.ok) throw new Error('the chart data answered ' + r.status);
          return r.json();
        })
        .then(draw)
        .catch(function (e) { if (status) status.textContent = 'Charts not updated: ' + e.message + '.'; });
    }

    var resizing = null;
    window.addEventListener('resize', function () {
      clearTimeout(resizing);
      resizing = setTimeout(function () {
        Object.keys(plots).forEach(function (name) {
          var box = plots[name].root.parentNode;
          plots[name].setSize({ width: Math.max(240, box.clientWidth), height: 170 });
        });
      }, 150);
    });

    load();
    setInterval(load, Math.max(5, refresh) * 1000);
  }

  function init() {
    var section = document.getElementById('charts');
    if (section && window.uPlot) start(section);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
