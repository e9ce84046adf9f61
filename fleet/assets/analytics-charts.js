// Medgate console: the Analytics page's charts. Ours (Apache-2.0), served from the binary and
// named by the page with its SRI hash; no inline script anywhere (the page's CSP forbids it).
//
// The page has <section id="analytics-charts"> holding <figure class="chart" data-chart="NAME"
// data-series='{"t": [day starts, Unix s], "v": [values]}'>. This draws each with uPlot as
// daily bars (a line over a year), the latest day's value in its caption; the tables on the
// page hold the same figures for anyone without JavaScript. Colours come from the style
// sheet's variables, so light and dark themes apply.
(function () {
  'use strict';

  var COLOURS = { studies: '--chart-1', images: '--chart-2' };

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
  }

  function pad(n) { return n < 10 ? '0' + n : '' + n; }
  function day(v) {
    var d = new Date(v * 1000);
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate());
  }
  function grouped(n) {
    return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, '\u202f');
  }
  function short(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(1) + ' M';
    if (n >= 1e4) return Math.round(n / 1e3) + ' k';
    return grouped(n);
  }

  function draw(fig, plots) {
    var data;
    try {
      data = JSON.parse(fig.getAttribute('data-series') || '{}');
    } catch (e) {
      return;
    }
    if (!data.t || !data.v) return;
    var name = fig.getAttribute('data-chart');
    var colour = css(COLOURS[name] || '--chart-1');
    var text = css('--muted');
    var grid = css('--line');
    var bars = data.t.length <= 62;
    var latest = fig.querySelector('.latest');
    if (latest && data.v.length) {
      var last = data.t[data.t.length - 1];
      var isToday = day(last) === day(Date.now() / 1000);
      latest.textContent = (isToday ? 'today so far ' : day(last) + ': ') + grouped(data.v[data.v.length - 1]);
    }
    var box = fig.querySelector('.plot');
    var width = Math.max(240, box.clientWidth);
    var series = [
      { label: 'Day (UTC)', value: function (u, v) { return v === null || v === undefined ? '–' : day(v); } },
      {
        label: name, stroke: colour, width: bars ? 1 : 2, fill: bars ? colour : undefined,
        points: { show: false },
        paths: bars && uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 40] }) : undefined,
        value: function (u, v) { return v === null || v === undefined ? '–' : grouped(v); },
      },
    ];
    var opts = {
      width: width,
      height: 200,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.08)]; } } },
      series: series,
      legend: { live: true },
      axes: [
        { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, space: 80,
          values: function (u, vals) { return vals.map(function (v) { return day(v).slice(5); }); } },
        { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 64,
          values: function (u, vals) { return vals.map(short); } },
      ],
    };
    plots.push({ plot: new uPlot(opts, [data.t, data.v], box), box: box });
  }

  function init() {
    var section = document.getElementById('analytics-charts');
    if (!section || !window.uPlot) return;
    var plots = [];
    section.querySelectorAll('figure.chart').forEach(function (fig) { draw(fig, plots); });
    var status = section.querySelector('.chart-status');
    if (status) status.textContent = 'Per UTC day; hover a chart for a day\u2019s figure.';
    var resizing = null;
    window.addEventListener('resize', function () {
      clearTimeout(resizing);
      resizing = setTimeout(function () {
        plots.forEach(function (p) { p.plot.setSize({ width: Math.max(240, p.box.clientWidth), height: 200 }); });
      }, 150);
    });
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
