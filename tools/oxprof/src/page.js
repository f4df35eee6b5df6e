// The report page's script: draws the flame graphs from the embedded JSON, switches tabs,
// zooms on click. With #selftest in the URL it also exercises itself and writes what it
// saw into <pre id="selftest"> (read by the headless-browser test).
(function () {
  'use strict';
  var errors = [];
  window.addEventListener('error', function (e) {
    errors.push(String(e.message || e));
  });

  var ROW = 18;          // pixels per stack level
  var MIN_SHARE = 0.001; // frames narrower than this share of the zoomed frame are not drawn
  var data = JSON.parse(document.getElementById('data').textContent);
  var names = data.names;
  var graphs = {};

  // [name, bytes, [children]] -> {name, bytes, x, depth, parent, children}
  function build(t, parent, x, depth) {
    var node = { name: names[t[0]], bytes: t[1], x: x, depth: depth, parent: parent, children: [] };
    var cx = x;
    for (var i = 0; i < t[2].length; i++) {
      var child = build(t[2][i], node, cx, depth + 1);
      node.children.push(child);
      cx += child.bytes;
    }
    return node;
  }

  function maxDepth(node) {
    var d = node.depth;
    for (var i = 0; i < node.children.length; i++) d = Math.max(d, maxDepth(node.children[i]));
    return d;
  }

  function hue(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return h;
  }

  function color(name) {
    var h = hue(name);
    return 'hsl(' + (20 + h % 40) + ',' + (70 + (h >> 8) % 20) + '%,' + (62 + (h >> 16) % 14) + '%)';
  }

  function human(bytes) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var v = bytes, u = 0;
    while (v >= 1024 && u + 1 < units.length) { v /= 1024; u++; }
    return (u === 0 ? String(v) : v.toFixed(1)) + ' ' + units[u];
  }

  function frameDiv(graph, node, left, width, ancestor) {
    var div = document.createElement('div');
    div.className = 'fr' + (ancestor ? ' anc' : '') + (node === graph.focus ? ' focus' : '');
    div.style.left = (left * 100) + '%';
    div.style.width = (width * 100) + '%';
    div.style.top = (node.depth * ROW) + 'px';
    div.style.background = node.depth === 0 ? '#d5d9e3' : color(node.name);
    div.textContent = node.name;
    div.title = node.name + '\n' + human(node.bytes) + ' (' +
      (100 * node.bytes / graph.root.bytes).toFixed(1) + '% of the view)';
    div.oxNode = node;
    graph.el.appendChild(div);
  }

  function draw(graph) {
    var el = graph.el, focus = graph.focus;
    el.textContent = '';
    el.style.height = ((graph.depth + 1) * ROW + 4) + 'px';
    for (var a = focus.parent; a; a = a.parent) frameDiv(graph, a, 0, 1, true);
    var stack = [focus];
    while (stack.length) {
      var node = stack.pop();
      var share = node.bytes / focus.bytes;
      if (share < MIN_SHARE) continue;
      frameDiv(graph, node, (node.x - focus.x) / focus.bytes, share, false);
      for (var i = 0; i < node.children.length; i++) stack.push(node.children[i]);
    }
  }

  function zoom(graph, node) {
    graph.focus = node;
    draw(graph);
  }

  Object.keys(data.views).forEach(function (id) {
    var el = document.getElementById('flame-' + id);
    if (!el) return;
    var root = build(data.views[id], null, 0, 0);
    var graph = { id: id, el: el, root: root, focus: root, depth: maxDepth(root) };
    graphs[id] = graph;
    el.addEventListener('click', function (e) {
      var target = e.target;
      while (target && target !== el && !target.oxNode) target = target.parentNode;
      if (target && target.oxNode) zoom(graph, target.oxNode);
    });
    draw(graph);
  });

  function show(id) {
    var tabs = document.querySelectorAll('#tabs .tab');
    for (var i = 0; i < tabs.length; i++) tabs[i].classList.toggle('on', tabs[i].dataset.view === id);
    var views = document.querySelectorAll('section.view');
    for (var j = 0; j < views.length; j++) views[j].hidden = views[j].id !== 'view-' + id;
  }
  var tabs = document.querySelectorAll('#tabs .tab');
  for (var i = 0; i < tabs.length; i++) {
    tabs[i].addEventListener('click', function (e) { show(e.currentTarget.dataset.view); });
  }

  // ---- self-test (#selftest) ----
  function selftest() {
    var out = [];
    var chart = document.querySelector('#timeline svg');
    if (chart) {
      var live = chart.querySelector('polyline.live');
      var resident = chart.querySelector('polyline.resident');
      var box = chart.getBoundingClientRect();
      out.push('chart width=' + Math.round(box.width) + ' height=' + Math.round(box.height) +
        ' live_points=' + (live ? live.points.numberOfItems : 0) +
        ' resident_points=' + (resident ? resident.points.numberOfItems : 0) +
        ' peak_marker=' + (chart.querySelector('.peak circle') ? 'yes' : 'no'));
    } else {
      out.push('chart none');
    }
    var tabs = document.querySelectorAll('#tabs .tab');
    for (var t = 0; t < tabs.length; t++) {
      var id = tabs[t].dataset.view;
      tabs[t].dispatchEvent(new MouseEvent('click', { bubbles: true }));
      var section = document.getElementById('view-' + id);
      var shown = section && !section.hidden && section.getBoundingClientRect().height > 0;
      var graph = graphs[id];
      if (!graph) {
        out.push('view ' + id + ' shown=' + shown + ' frames=0');
        continue;
      }
      var frames = graph.el.querySelectorAll('.fr');
      var width = graph.el.getBoundingClientRect().width;
      out.push('view ' + id + ' shown=' + shown + ' frames=' + frames.length +
        ' width=' + Math.round(width) + ' total=' + graph.root.bytes);
      var seen = {};
      for (var f = 0; f < frames.length; f++) {
        var name = frames[f].oxNode.name;
        if (!seen[name]) { seen[name] = 1; out.push('frame ' + id + ' ' + name); }
      }
      // Zoom: the widest frame below the root with at most 80% of the view (else the
      // widest that is not the whole view).
      var pick = null;
      for (var limit = 0.8; limit <= 1 && !pick; limit += 0.2) {
        for (var g = 0; g < frames.length; g++) {
          var n = frames[g].oxNode;
          if (n.depth >= 1 && n.bytes < graph.root.bytes && n.bytes <= limit * graph.root.bytes &&
              (!pick || n.bytes > pick.oxNode.bytes)) pick = frames[g];
        }
      }
      if (!pick) {
        out.push('zoom ' + id + ' none');
        continue;
      }
      var node = pick.oxNode;
      var before = pick.getBoundingClientRect().width / width;
      pick.dispatchEvent(new MouseEvent('click', { bubbles: true }));
      var after = -1, outside = 0;
      var now = graph.el.querySelectorAll('.fr');
      for (var k = 0; k < now.length; k++) {
        var m = now[k].oxNode;
        if (m === node) after = now[k].getBoundingClientRect().width / width;
        var inside = false;
        for (var p = m; p; p = p.parent) if (p === node) inside = true;
        var above = false;
        for (var q = node.parent; q; q = q.parent) if (q === m) above = true;
        if (!inside && !above) outside++;
      }
      out.push('zoom ' + id + ' ' + node.name + ' before=' + before.toFixed(3) +
        ' after=' + after.toFixed(3) + ' outside=' + outside + ' frames=' + now.length);
      zoom(graph, graph.root);
    }
    if (tabs.length) tabs[0].dispatchEvent(new MouseEvent('click', { bubbles: true }));
    out.push('errors ' + (errors.length ? errors.join(' | ') : 'none'));
    out.push('selftest done');
    var pre = document.getElementById('selftest');
    pre.textContent = out.join('\n');
    pre.hidden = false;
  }
  if (location.hash === '#selftest') {
    try { selftest(); } catch (e) {
      var pre = document.getElementById('selftest');
      pre.textContent = 'selftest failed: ' + e + '\nerrors ' + errors.join(' | ');
      pre.hidden = false;
    }
  }
})();
