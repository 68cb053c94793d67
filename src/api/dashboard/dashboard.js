// tokend dashboard (SPEC §14). Reads the JSON API with the admin token and redraws every few
// seconds without reloading. Every value from the API reaches the page through textContent
// or an attribute, never as HTML. No external request: the CSP allows this origin only.
'use strict';
(function () {
  const API = '/api/v1/automation';
  const TOKEN_KEY = 'tokend.admin_token';
  const REFRESH_MS = 5000;
  const CAPTCHA_RETRY_MS = 60000;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let refreshTimer = null;
  let paused = false;
  let refreshing = false;
  let refreshAgain = false;
  let captchaCheckedAt = 0;
  let captchaAvailable = null;
  let captchaIds = '';

  // ---- small helpers --------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  // An element with properties (className, type, title, dataset, onclick) and children
  // (strings become text nodes).
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node[key] = value;
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  function pill(value, label) {
    const text = value === null || value === undefined ? '—' : String(value);
    return el('span', { className: 'state s-' + text.replace(/[^a-z0-9_]/gi, '') }, label || text);
  }

  // Dates in the browser's time zone. tokend's times are UTC: one without a zone is read so.
  function when(iso) {
    if (!iso) return '—';
    const text = String(iso);
    const date = new Date(/(Z|[+-]\d\d:?\d\d)$/.test(text) ? text : text + 'Z');
    return isNaN(date) ? String(iso) : date.toLocaleString(undefined, { hour12: false });
  }

  function clock(date) {
    return date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', hour12: false });
  }

  function span(seconds) {
    if (seconds <= 0) return '0s';
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    if (m > 0) return m + 'm ' + r + 's';
    return r + 's';
  }

  // A countdown to an instant, kept current by the one-second ticker.
  function countdown(iso, expiredText) {
    const node = el('span', { className: 'countdown', title: when(iso) });
    node.dataset.until = iso;
    node.dataset.expired = expiredText || '0s';
    tickOne(node, Date.now());
    return node;
  }

  function tickOne(node, now) {
    const left = (Date.parse(node.dataset.until) - now) / 1000;
    node.textContent = left > 0 ? span(left) : node.dataset.expired;
  }

  function tick() {
    const now = Date.now();
    document.querySelectorAll('.countdown').forEach((node) => tickOne(node, now));
  }

  function fixed(value, digits) {
    return typeof value === 'number' && isFinite(value) ? value.toFixed(digits) : '—';
  }

  function percent(value) {
    return typeof value === 'number' && isFinite(value) ? value.toFixed(1) + '%' : '—';
  }

  // ---- the API ----------------------------------------------------------------------------

  class Unauthorized extends Error {}

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    // 'same-origin', not 'no-referrer': with no referrer a browser sends `Origin: null`,
    // which tokend refuses like any other foreign origin.
    const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'same-origin' };
    // Every change says JSON, body or not: tokend refuses one that a form could have sent.
    if (method !== 'GET') headers['Content-Type'] = 'application/json';
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    let json = null;
    try { json = await response.json(); } catch (e) { json = null; }
    if (response.status === 401) throw new Unauthorized((json && json.message) || 'unauthorized');
    return { status: response.status, ok: response.ok, body: json };
  }

  async function data(path) {
    const answer = await api('GET', path);
    if (!answer.body || answer.body.success === false) {
      const message = answer.body ? answer.body.code + ': ' + answer.body.message : 'HTTP ' + answer.status;
      throw new Error(path + ' — ' + message);
    }
    return answer.body.data;
  }

  function errorText(answer) {
    if (answer.body && answer.body.code) return answer.body.code + ': ' + answer.body.message;
    return 'HTTP ' + answer.status;
  }

  function showResult(ok, text) {
    const node = $('result');
    node.hidden = false;
    node.className = 'result ' + (ok ? 'ok' : 'fail');
    node.textContent = (ok ? '✓ ' : '✗ ') + text + ' — ' + clock(new Date());
  }

  // Runs an action, shows its answer, refreshes the page's data.
  async function act(button, label, method, path, body, describe) {
    button.disabled = true;
    try {
      const answer = await api(method, path, body);
      if (answer.ok && answer.body && answer.body.success) {
        showResult(true, label + ': ' + describe(answer.body.data));
      } else {
        showResult(false, label + ': ' + errorText(answer));
      }
    } catch (e) {
      if (e instanceof Unauthorized) return askForToken('令牌已失效 The token was refused');
      showResult(false, label + ': ' + e.message);
    } finally {
      button.disabled = false;
    }
    refresh();
  }

  // ---- auth -------------------------------------------------------------------------------

  function askForToken(message) {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    stopRefreshing();
    $('app').hidden = true;
    $('overall').hidden = true;
    $('logout').hidden = true;
    $('pause').hidden = true;
    $('refreshed').textContent = '';
    $('login').hidden = false;
    const error = $('login-error');
    error.hidden = !message;
    error.textContent = message || '';
    $('login-token').focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const candidate = $('login-token').value.trim();
    if (!candidate) return;
    token = candidate;
    try {
      await api('GET', API + '/performance/health');
    } catch (e) {
      return askForToken(e instanceof Unauthorized ? '令牌无效 Invalid token' : e.message);
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $('login-token').value = '';
    openApp();
  }

  function openApp() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = !token;
    $('pause').hidden = false;
    refresh();
    startRefreshing();
  }

  function startRefreshing() {
    stopRefreshing();
    refreshTimer = setInterval(() => { if (!paused) refresh(); }, REFRESH_MS);
  }

  function stopRefreshing() {
    if (refreshTimer) clearInterval(refreshTimer);
    refreshTimer = null;
  }

  // ---- loading ----------------------------------------------------------------------------

  function historyPath() {
    const query = new URLSearchParams({ limit: '50' });
    const site = $('filter-site').value, account = $('filter-account').value.trim();
    const status = $('filter-status').value;
    if (site) query.set('site_name', site);
    if (account) query.set('account', account);
    if (status) query.set('status', status);
    return API + '/history?' + query.toString();
  }

  async function refresh() {
    if (refreshing) {
      refreshAgain = true; // an action's effect must show without waiting for the timer
      return;
    }
    refreshing = true;
    refreshAgain = false;
    try {
      // Each part on its own: with the database down, health and metrics still show.
      const errors = [];
      const soft = (promise, what) => promise.catch((e) => {
        if (e instanceof Unauthorized) throw e;
        errors.push(what + ' — ' + e.message);
        return null;
      });
      const [health, metrics, usage, timeline, alertLog, accounts, history] = await Promise.all([
        soft(api('GET', API + '/performance/health').then((a) => a.body && a.body.data), 'health'),
        soft(data(API + '/performance/metrics'), 'metrics'),
        soft(data(API + '/performance/resource-usage'), 'resource-usage'),
        soft(data(API + '/performance/timeline'), 'timeline'),
        soft(data(API + '/performance/alerts/history'), 'alerts'),
        soft(data(API + '/accounts'), 'accounts'),
        data(historyPath()).catch((e) => {
          if (e instanceof Unauthorized) throw e;
          return { error: e.message };
        }),
      ]);
      const siteNames = Object.keys((health && health.components && health.components.sites) || {}).sort();
      const tokens = {};
      await Promise.all(siteNames.map(async (site) => {
        tokens[site] = await soft(data(API + '/tokens/status?site_name=' + encodeURIComponent(site))
          .then((d) => d.tokens), 'tokens of ' + site);
      }));
      renderOverview(health, metrics, usage);
      if (timeline) renderCharts(timeline.points || []);
      renderAlerts(health, alertLog ? alertLog.transitions || [] : []);
      if (health) renderSites(siteNames, health, metrics || {}, accounts ? accounts.accounts || [] : null, tokens);
      renderHistory(history);
      await loadCaptchas();
      const updated = '更新于 Updated ' + new Date().toLocaleTimeString(undefined, { hour12: false });
      $('refreshed').textContent = errors.length ? updated + ' · 部分数据不可用 Unavailable: ' + errors.join('; ') : updated;
      $('refreshed').className = errors.length ? 'error' : 'muted';
      document.body.dataset.loaded = 'true';
    } catch (e) {
      if (e instanceof Unauthorized) askForToken('令牌已失效 The token was refused');
      else $('refreshed').textContent = '刷新失败 Refresh failed: ' + e.message;
    } finally {
      refreshing = false;
      if (refreshAgain && !$('app').hidden) refresh();
    }
  }

  // ---- overview ---------------------------------------------------------------------------

  function stat(label, value, id) {
    return el('div', { className: 'stat', dataset: { stat: id } },
      el('div', { className: 'label' }, label), el('div', { className: 'value' }, value));
  }

  function renderOverview(health, metrics, usage) {
    const overall = $('overall');
    overall.hidden = !health;
    if (health) {
      overall.className = 'pill s-' + health.status;
      overall.textContent = '健康 Health: ' + health.status;
    }
    const stats = [];
    let tail = [];
    if (metrics) {
      const logins = metrics.login_duration_percentiles || {};
      stats.push(
        stat('获取总数 Acquisitions', metrics.total_acquisitions, 'total'),
        stat('成功率 Success rate', percent(metrics.success_rate), 'success_rate'),
        stat('缓存命中率 Cache hit rate', percent(metrics.cache_hit_rate), 'cache_hit_rate'));
      tail = [
        stat('拒绝 Rejected', metrics.rejected_acquisitions, 'rejected'),
        stat('登录 p50 / p95 Login (s)', fixed(logins.p50, 1) + ' / ' + fixed(logins.p95, 1), 'login'),
        stat('运行时间 Uptime', span(metrics.uptime_seconds || 0), 'uptime')];
    }
    if (usage) {
      const shared = usage.shared_slots && usage.shared_slots.state === 'connected' ? usage.shared_slots : null;
      const inUse = shared ? shared.active_total : usage.active_acquisitions.total;
      const queued = shared ? shared.queue_size : usage.queue.size;
      stats.push(
        stat('占用槽位 Slots in use', inUse + ' / ' + usage.limits.global, 'slots'),
        stat('排队 Queue', queued, 'queue'));
    }
    stats.push(...tail);
    $('stats').replaceChildren(...stats);
  }

  // ---- charts (inline SVG) ----------------------------------------------------------------

  const W = 600, H = 180, PAD_L = 36, PAD_B = 18, PAD_T = 8;

  function frame(max, points) {
    const root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img' });
    root.append(svg('line', { x1: PAD_L, y1: H - PAD_B, x2: W, y2: H - PAD_B, class: 'axis' }));
    root.append(svg('line', { x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: H - PAD_B, class: 'axis' }));
    const top = svg('text', { x: PAD_L - 4, y: PAD_T + 8, 'text-anchor': 'end' });
    top.textContent = String(max);
    const zero = svg('text', { x: PAD_L - 4, y: H - PAD_B, 'text-anchor': 'end' });
    zero.textContent = '0';
    root.append(top, zero);
    [0, Math.floor(points.length / 2), points.length - 1].forEach((i, n) => {
      if (!points[i]) return;
      const label = svg('text', {
        x: PAD_L + (i + 0.5) * ((W - PAD_L) / points.length), y: H - 4,
        'text-anchor': n === 0 ? 'start' : n === 2 ? 'end' : 'middle',
      });
      label.textContent = clock(new Date(points[i].start));
      root.append(label);
    });
    return root;
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function renderCharts(points) {
    const totals = points.map((p) => p.successes + p.failures + p.rejections + p.cache_hits);
    const max = niceMax(Math.max(0, ...totals));
    const chart = frame(max, points);
    const slot = (W - PAD_L) / Math.max(points.length, 1);
    const scale = (H - PAD_B - PAD_T) / max;
    let bars = 0;
    points.forEach((p, i) => {
      let y = H - PAD_B;
      for (const [value, cls, label] of [[p.successes, 'bar-ok', '成功 success'], [p.failures, 'bar-bad', '失败 failed'],
        [p.rejections, 'bar-rej', '拒绝 rejected'], [p.cache_hits, 'bar-hit', '缓存命中 cache hits']]) {
        if (!value) continue;
        const h = Math.max(value * scale, 1);
        y -= h;
        const rect = svg('rect', { x: PAD_L + i * slot + 1, y, width: Math.max(slot - 2, 1), height: h, class: cls });
        const title = svg('title');
        title.textContent = clock(new Date(p.start)) + ' ' + label + ': ' + value;
        rect.append(title);
        chart.append(rect);
        bars++;
      }
    });
    chart.dataset.bars = String(bars);
    $('chart-acquisitions').replaceChildren(chart);

    const durations = points.flatMap((p) => [p.login_p50, p.login_p95]).filter((v) => typeof v === 'number');
    const dmax = niceMax(Math.max(0, ...durations));
    const dchart = frame(dmax, points);
    const dscale = (H - PAD_B - PAD_T) / dmax;
    let marks = 0;
    for (const [key, cls] of [['login_p50', 'p50'], ['login_p95', 'p95']]) {
      let path = '';
      let pen = false;
      points.forEach((p, i) => {
        const value = p[key];
        if (typeof value !== 'number') { pen = false; return; }
        const x = PAD_L + (i + 0.5) * slot, y = H - PAD_B - value * dscale;
        path += (pen ? ' L' : ' M') + x.toFixed(1) + ' ' + y.toFixed(1);
        pen = true;
        const dot = svg('circle', { cx: x, cy: y, r: cls === 'p50' ? 4 : 3, class: 'dot-' + cls });
        const title = svg('title');
        title.textContent = clock(new Date(p.start)) + ' ' + cls + ': ' + value.toFixed(2) + 's';
        dot.append(title);
        dchart.append(dot);
        marks++;
      });
      if (path) dchart.append(svg('path', { d: path.trim(), class: 'line-' + cls }));
    }
    dchart.dataset.marks = String(marks);
    $('chart-durations').replaceChildren(dchart);
  }

  // ---- alerts -----------------------------------------------------------------------------

  function renderAlerts(health, transitions) {
    const firing = (health && health.alerts) || [];
    $('alerts-firing').replaceChildren(firing.length
      ? el('div', null, firing.map((a) => el('div', { className: 'alert ' + a.severity },
        pill(a.severity), ' ', el('strong', null, a.type), ' — ', a.message)))
      : el('p', { className: 'empty' }, '没有告警 No alert is firing'));
    $('alerts-history').replaceChildren(transitions.length
      ? table(['时间 Time', '类型 Type', '变化 Change', '级别 Severity', '说明 Message'],
        transitions.map((t) => [when(t.at), t.type, pill(t.transition), t.severity ? pill(t.severity) : '—', t.message || '']))
      : el('p', { className: 'empty' }, '今天没有告警变化 No alert fired or resolved today'));
  }

  function table(headers, rows, rowProps) {
    return el('div', { className: 'table-wrap' }, el('table', null,
      el('thead', null, el('tr', null, headers.map((h) => el('th', null, h)))),
      el('tbody', null, rows.map((cells, i) => el('tr', rowProps ? rowProps(i) : null,
        cells.map((c) => (c instanceof Node && c.tagName === 'TD') ? c : el('td', null, c)))))));
  }

  // ---- sites and accounts -----------------------------------------------------------------

  function renderSites(siteNames, health, metrics, accounts, tokens) {
    const select = $('filter-site');
    const chosen = select.value;
    select.replaceChildren(el('option', { value: '' }, '全部 All'),
      siteNames.map((s) => el('option', { value: s, selected: s === chosen }, s)));
    const list = $('site-list');
    if (!siteNames.length) {
      list.replaceChildren(el('p', { className: 'card empty' }, '没有配置站点 No site is configured'));
      return;
    }
    // A derived site has no accounts of its own: it shows its parent's (accounts_of_site),
    // with its own tokens.
    list.replaceChildren(...siteNames.map((name) => {
      const report = health.components.sites[name];
      const owner = report.accounts_of_site || name;
      return renderSite(name, report, (metrics.sites || {})[name],
        accounts && accounts.filter((a) => a.site_name === owner), tokens[name]);
    }));
  }

  function renderSite(name, report, counters, accounts, tokens) {
    const circuit = report.circuit || {};
    const facts = el('div', { className: 'site-facts' },
      el('span', null, '状态 Status ', pill(report.status)),
      el('span', null, '熔断 Circuit ', pill(circuit.state), ' ',
        circuit.failures ? '(' + circuit.failures + ' 次失败 failures)' : '',
        circuit.retry_at && circuit.state !== 'closed' ? el('span', null, ' 重试 retry in ', countdown(circuit.retry_at, 'now')) : ''),
      el('span', null, '可用账号 Usable ', report.usable_accounts + ' / ' + report.accounts,
        report.accounts_of_site ? el('span', { className: 'muted' }, ' (' + report.accounts_of_site + ' 的账号 accounts)') : ''),
      counters ? el('span', { className: 'muted' }, '获取 ' + counters.total_acquisitions + ' acquisitions, ' + percent(counters.success_rate) + ' ok') : '');
    const warm = el('button', { type: 'button', dataset: { action: 'warm-up', site: name } }, '预热缓存 Warm up');
    warm.addEventListener('click', () => act(warm, '预热 Warm up ' + name, 'POST',
      API + '/performance/cache/warm-up?site_name=' + encodeURIComponent(name), undefined,
      (d) => JSON.stringify(d)));
    const close = el('button', { type: 'button', dataset: { action: 'close-circuit', site: name }, disabled: circuit.state === 'closed' }, '关闭熔断 Close circuit');
    close.addEventListener('click', () => act(close, '关闭熔断 Close circuit ' + name, 'POST',
      API + '/sites/' + encodeURIComponent(name) + '/circuit/close', undefined,
      (d) => 'circuit ' + (d.circuit ? d.circuit.state : '?')));
    const head = el('div', { className: 'site-head' },
      el('h3', null, name), facts, el('div', { className: 'site-actions' }, warm, close));
    const byAccount = {};
    (tokens || []).forEach((t) => { byAccount[t.account] = t; });
    if (!accounts) {
      return el('section', { className: 'card site', dataset: { site: name } }, head,
        el('p', { className: 'error' }, '账号暂不可读 Accounts cannot be read now (see the health status)'));
    }
    const rows = accounts.map((a) => accountRow(name, a, byAccount[a.account]));
    const body = rows.length
      ? table(['账号 Account', '状态 State', '剩余 Time left', '成功 / 失败 OK / Failed', '最近登录 Last login',
        '本小时可登录 Logins left this hour', '令牌到期 Token expires', '来源 Source', '操作 Actions'],
      rows.map((r) => r.cells), (i) => rows[i].props)
      : el('p', { className: 'empty' }, '没有账号 No account');
    return el('section', { className: 'card site', dataset: { site: name } }, head, body);
  }

  // A job checkout holding the account: who (the job), since when, and the lease's end.
  function checkoutNote(checkout) {
    if (!checkout) return '';
    return el('div', { className: 'checkout', dataset: { checkout: checkout.checkout_id } },
      pill('checked_out', '作业占用 checked out'),
      el('span', { className: 'muted' }, ' ' + (checkout.job || '—') + ' · ', when(checkout.since), ' · '),
      countdown(checkout.lease_until, '—'));
  }

  function accountRow(site, account, token) {
    const blocked = account.state === 'blacklisted' || account.state === 'cooling_down';
    const actions = el('td', { className: 'acts' });
    if (blocked) {
      const unblock = el('button', { type: 'button', dataset: { action: 'unblock', site, account: account.account } }, '解封 Unblock');
      // The block is the account's, kept under the site that owns it (a derived site's parent).
      unblock.addEventListener('click', () => act(unblock, '解封 Unblock ' + account.site_name + '/' + account.account, 'POST',
        API + '/accounts/unblock', { site_name: account.site_name, account: account.account },
        (d) => d.was_blocked ? 'unblocked' : 'was not blocked'));
      actions.append(unblock);
    }
    if (token && token.source) {
      const invalidate = el('button', { type: 'button', dataset: { action: 'invalidate', site, account: account.account } }, '作废令牌 Invalidate');
      invalidate.addEventListener('click', () => act(invalidate, '作废令牌 Invalidate ' + site + '/' + account.account, 'POST',
        API + '/tokens/invalidate', { site_name: site, account: account.account },
        (d) => d.stored_token_removed ? 'token dropped' : 'nothing was stored'));
      actions.append(invalidate);
    }
    const reason = account.reason ? ' (' + account.reason + ')' : '';
    return {
      props: { dataset: { account: account.account, state: account.state } },
      cells: [
        el('strong', null, account.account, account.is_preferred ? ' ★' : ''),
        el('span', null, pill(account.state), reason, checkoutNote(account.checkout)),
        account.until && blocked ? countdown(account.until, '—') : '—',
        el('span', { className: 'num' }, account.login_success_count + ' / ' + account.login_failure_count),
        account.last_login_success_at ? when(account.last_login_success_at)
          : account.last_login_attempt_at ? el('span', { className: 'muted' }, when(account.last_login_attempt_at), ' (尝试 attempt)') : '—',
        // login_budget_left: null when the site has no budget per account.
        account.login_budget_left === null || account.login_budget_left === undefined
          ? el('span', { className: 'muted' }, '不限 unlimited')
          : el('span', { className: 'num' }, String(account.login_budget_left)),
        token && token.expires_at ? el('span', null, countdown(token.expires_at, 'expired'),
          token.fresh ? '' : el('span', { className: 'muted' }, ' (将刷新 due for refresh)')) : el('span', { className: 'muted' }, '无 none'),
        token && token.source ? el('span', null, pill(token.source), token.trigger_reason ? ' ' + token.trigger_reason : '') : '—',
        actions,
      ],
    };
  }

  // ---- history ----------------------------------------------------------------------------

  function renderHistory(history) {
    const target = $('history-table');
    if (history.error) {
      target.replaceChildren(el('p', { className: 'error' }, history.error));
      return;
    }
    const items = history.items || [];
    target.replaceChildren(items.length
      ? table(['时间 Time', '站点 Site', '账号 Account', '状态 Status', '触发 Trigger', '耗时 Duration (s)', '错误 Error'],
        items.map((r) => [when(r.created_at), r.site_name, r.account || '—', pill(r.status), r.trigger_reason,
          fixed(r.total_duration, 2), r.error_message || '']))
      : el('p', { className: 'empty' }, '没有记录 No acquisition recorded'));
  }

  // ---- captchas (lights up once GET /captchas exists) ---------------------------------------

  async function loadCaptchas() {
    const now = Date.now();
    if (captchaAvailable === false && now - captchaCheckedAt < CAPTCHA_RETRY_MS) return;
    captchaCheckedAt = now;
    let answer;
    try {
      answer = await api('GET', API + '/captchas');
    } catch (e) {
      if (e instanceof Unauthorized) throw e;
      answer = { status: 0 };
    }
    captchaAvailable = answer.status === 200;
    const d = captchaAvailable && answer.body ? answer.body.data : null;
    const list = Array.isArray(d) ? d : (d && (d.captchas || d.items)) || [];
    $('captchas').hidden = list.length === 0;
    const ids = list.map((c) => c.id).join(',');
    if (ids === captchaIds) return; // keep what the operator is typing
    captchaIds = ids;
    $('captcha-list').replaceChildren(...list.map(renderCaptcha));
  }

  function captchaImage(image) {
    if (typeof image !== 'string') return null;
    if (/^data:image\/(png|jpeg|jpg|gif|webp|bmp);base64,[A-Za-z0-9+/=\s]+$/.test(image)) return image;
    if (/^[A-Za-z0-9+/=\s]+$/.test(image)) return 'data:image/jpeg;base64,' + image.replace(/\s/g, '');
    return null;
  }

  function renderCaptcha(c) {
    const src = captchaImage(c.image || c.image_base64);
    const input = el('input', { type: 'text', maxLength: 64, placeholder: '答案 Answer' });
    const send = el('button', { type: 'button', dataset: { action: 'answer-captcha' } }, '提交 Submit');
    send.addEventListener('click', () => {
      if (!input.value.trim()) return;
      captchaIds = '';
      act(send, '验证码 Captcha ' + c.id, 'POST', API + '/captchas/' + encodeURIComponent(c.id),
        { answer: input.value.trim() }, () => 'answered');
    });
    return el('div', { className: 'captcha', dataset: { captcha: String(c.id) } },
      src ? el('img', { src, alt: 'captcha' }) : el('span', { className: 'muted' }, '(无图片 no image)'),
      el('div', null, el('strong', null, (c.site_name || c.site || '') + ' / ' + (c.account || '')),
        el('div', { className: 'muted' }, c.prompt || ''), el('div', { className: 'muted' }, when(c.created_at))),
      input, send);
  }

  // ---- start ------------------------------------------------------------------------------

  // A token in the address's fragment (`/#token=…`, for a headless browser taking a
  // screenshot): read once, kept like a typed one, and dropped from the address bar and the
  // tab's history at once. A fragment never reaches the server or its logs.
  function tokenFromFragment() {
    const given = new URLSearchParams(location.hash.slice(1)).get('token');
    if (!location.hash.startsWith('#token=')) return;
    history.replaceState(null, '', location.pathname + location.search);
    if (!given) return;
    token = given;
    sessionStorage.setItem(TOKEN_KEY, token);
  }

  function start() {
    tokenFromFragment();
    $('login-form').addEventListener('submit', signIn);
    $('logout').addEventListener('click', () => askForToken(''));
    $('pause').addEventListener('click', () => {
      paused = !paused;
      $('pause').textContent = paused ? '继续 Resume' : '暂停 Pause';
      if (!paused) refresh();
    });
    $('history-filter').addEventListener('submit', (event) => { event.preventDefault(); refresh(); });
    $('reset-metrics').addEventListener('click', () => { $('reset-confirm').hidden = false; });
    $('reset-no').addEventListener('click', () => { $('reset-confirm').hidden = true; });
    $('reset-yes').addEventListener('click', () => {
      $('reset-confirm').hidden = true;
      act($('reset-yes'), '重置指标 Reset metrics', 'POST', API + '/performance/metrics/reset', undefined,
        (d) => '已清零 zeroed; before: ' + (d.previous ? d.previous.total_acquisitions : '?') + ' acquisitions');
    });
    setInterval(tick, 1000);
    // Without a stored token, see whether the API wants one; with one, use it.
    api('GET', API + '/performance/health')
      .then(() => openApp())
      .catch((e) => askForToken(e instanceof Unauthorized ? (token ? '令牌已失效 The token was refused' : '') : e.message));
  }

  start();
})();
