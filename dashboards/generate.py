"""Generate dashboards/django.json: `python dashboards/generate.py > dashboards/django.json`.

Edit panels here, not in the JSON; tests/e2e/test_prometheus.py runs every panel query against a
real Prometheus and fails when a family served on /metrics/ has no panel.
"""

import json

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job="$job", instance=~"$instance"'
CSEL = 'job=~"$celery_job"'
R = "[$__rate_interval]"

panels = []
y = 0
pid = 0


def nid():
    global pid
    pid += 1
    return pid


def row(title):
    global y
    panels.append(
        {
            "type": "row",
            "title": title,
            "id": nid(),
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "panels": [],
        }
    )
    y += 1


layout = {"x": 0, "h": 0}


def place(w, h):
    global y
    if layout["x"] + w > 24:
        y += layout["h"]
        layout["x"] = 0
        layout["h"] = 0
    pos = {"h": h, "w": w, "x": layout["x"], "y": y}
    layout["x"] += w
    layout["h"] = max(layout["h"], h)
    return pos


def flush():
    global y
    y += layout["h"]
    layout["x"] = 0
    layout["h"] = 0


def targets(exprs):
    out = []
    for i, (expr, legend) in enumerate(exprs):
        out.append(
            {
                "datasource": DS,
                "expr": expr,
                "legendFormat": legend,
                "refId": chr(65 + i),
                "range": True,
                "instant": False,
                "editorMode": "code",
            }
        )
    return out


def ts(title, exprs, unit="short", desc="", w=12, h=8, stack=False, minv=None, maxv=None):
    defaults = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
        "color": {"mode": "palette-classic"},
    }
    if minv is not None:
        defaults["min"] = minv
    if maxv is not None:
        defaults["max"] = maxv
    panels.append(
        {
            "type": "timeseries",
            "title": title,
            "description": desc,
            "id": nid(),
            "datasource": DS,
            "gridPos": place(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"},
            },
            "targets": targets(exprs),
        }
    )


def stat(title, expr, unit="short", desc="", w=4, h=4, thresholds=None, decimals=None):
    steps = thresholds or [{"color": "green", "value": None}]
    defaults = {
        "unit": unit,
        "thresholds": {"mode": "absolute", "steps": steps},
        "color": {"mode": "thresholds"},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    panels.append(
        {
            "type": "stat",
            "title": title,
            "description": desc,
            "id": nid(),
            "datasource": DS,
            "gridPos": place(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "area",
                "justifyMode": "auto",
                "orientation": "auto",
                "textMode": "auto",
            },
            "targets": targets([(expr, "")]),
        }
    )


def q(hist, quant, by="", sel=SEL):
    by_clause = f"sum by ({by + ', ' if by else ''}le)"
    return f"histogram_quantile({quant}, {by_clause} (rate({hist}_bucket{{{sel}}}{R})))"


def avg(hist, by="", sel=SEL):
    b = f"sum by ({by}) " if by else "sum"
    b = b.strip()
    return f"{b} (rate({hist}_sum{{{sel}}}{R})) / {b} (rate({hist}_count{{{sel}}}{R}))"


# ---------- Overview ----------
row("Overview")
stat(
    "Requests / s",
    f"sum(rate(django_http_requests_total{{{SEL}}}{R}))",
    "reqps",
    "All HTTP requests answered by the selected instances.",
)
stat(
    "5xx ratio",
    f'(sum(rate(django_http_requests_total{{{SEL}, status=~"5.."}}{R})) or vector(0))'
    f" / sum(rate(django_http_requests_total{{{SEL}}}{R}))",
    "percentunit",
    "Share of responses with a 5xx status (alert DjangoHigh5xxRatio fires above 5 %).",
    thresholds=[
        {"color": "green", "value": None},
        {"color": "orange", "value": 0.01},
        {"color": "red", "value": 0.05},
    ],
    decimals=2,
)
stat(
    "p95 latency",
    q("django_http_request_duration_seconds", 0.95),
    "s",
    "95th percentile of request latency, from the histogram buckets.",
    thresholds=[
        {"color": "green", "value": None},
        {"color": "orange", "value": 0.5},
        {"color": "red", "value": 1},
    ],
)
stat(
    "In progress",
    f"sum(django_http_requests_in_progress{{{SEL}}})",
    "short",
    "Requests being processed right now.",
)
stat(
    "Targets up",
    f"sum(up{{{SEL}}})",
    "short",
    "Scrapes that succeeded (0 when the site is down or refuses the Bearer token).",
    thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
)
stat(
    "Memory",
    f"sum(django_process_memory_bytes{{{SEL}}})",
    "bytes",
    "Resident memory of all the site's processes (workers and master where instrumented).",
)
flush()

# ---------- HTTP ----------
row("HTTP")
ts(
    "Requests / s by view",
    [(f"sum by (view) (rate(django_http_requests_total{{{SEL}}}{R}))", "{{view}}")],
    "reqps",
    "`view` is the URL pattern name, or its route when unnamed; unresolved paths share one value.",
)
ts(
    "Requests / s by status",
    [(f"sum by (status) (rate(django_http_requests_total{{{SEL}}}{R}))", "{{status}}")],
    "reqps",
    stack=True,
)
ts(
    "Error ratio by view (5xx / all)",
    [
        (
            f'sum by (view) (rate(django_http_requests_total{{{SEL}, status=~"5.."}}{R}))'
            f" / sum by (view) (rate(django_http_requests_total{{{SEL}}}{R}))",
            "{{view}}",
        )
    ],
    "percentunit",
    "Views without any 5xx draw no line.",
    minv=0,
)
ts(
    "Requests / s by method",
    [(f"sum by (method) (rate(django_http_requests_total{{{SEL}}}{R}))", "{{method}}")],
    "reqps",
)
ts(
    "Exceptions / s by view and type",
    [(f"sum by (view, type) (rate(django_http_exceptions_total{{{SEL}}}{R}))", "{{view}} {{type}}")],
    "ops",
    "Exceptions raised by views (they also count as status 500), by exception class.",
    minv=0,
)
ts(
    "Latency quantiles",
    [
        (q("django_http_request_duration_seconds", 0.5), "p50"),
        (q("django_http_request_duration_seconds", 0.95), "p95"),
        (q("django_http_request_duration_seconds", 0.99), "p99"),
        (avg("django_http_request_duration_seconds"), "mean"),
    ],
    "s",
    "Quantiles are interpolated within histogram buckets (see LATENCY_BUCKETS).",
)
ts("p95 latency by view", [(q("django_http_request_duration_seconds", 0.95, "view"), "{{view}}")], "s")
ts(
    "Requests in progress by method",
    [(f"sum by (method) (django_http_requests_in_progress{{{SEL}}})", "{{method}}")],
    "short",
)
ts("Mean latency by view", [(avg("django_http_request_duration_seconds", "view"), "{{view}}")], "s")
ts(
    "Request body size",
    [(q("django_http_request_size_bytes", 0.95), "p95"), (avg("django_http_request_size_bytes"), "mean")],
    "bytes",
)
ts(
    "Response body size",
    [(q("django_http_response_size_bytes", 0.95), "p95"), (avg("django_http_response_size_bytes"), "mean")],
    "bytes",
)
ts(
    "Bytes / s in and out",
    [
        (f"sum(rate(django_http_request_size_bytes_sum{{{SEL}}}{R}))", "received"),
        (f"sum(rate(django_http_response_size_bytes_sum{{{SEL}}}{R}))", "sent"),
    ],
    "Bps",
)
ts("Response size p95 by view", [(q("django_http_response_size_bytes", 0.95, "view"), "{{view}}")], "bytes")
flush()

# ---------- Database ----------
row("Database")
ts(
    "Queries / s by operation",
    [
        (
            f"sum by (database, operation) (rate(django_db_queries_total{{{SEL}}}{R}))",
            "{{database}} {{operation}}",
        )
    ],
    "ops",
    stack=True,
)
ts(
    "Query latency",
    [
        (
            q("django_db_query_duration_seconds", 0.95, "database, operation"),
            "p95 {{database}} {{operation}}",
        ),
        (avg("django_db_query_duration_seconds", "database"), "mean {{database}}"),
    ],
    "s",
)
ts(
    "Query and connection errors / s",
    [
        (
            f"sum by (database, operation) (rate(django_db_query_errors_total{{{SEL}}}{R}))",
            "query {{database}} {{operation}}",
        ),
        (f"sum by (database) (rate(django_db_connection_errors_total{{{SEL}}}{R}))", "connect {{database}}"),
    ],
    "ops",
    "Queries that raised, and failed attempts to open a connection.",
)
ts(
    "Queries per request",
    [
        (
            f"sum(rate(django_db_queries_total{{{SEL}}}{R}))"
            f" / sum(rate(django_http_requests_total{{{SEL}}}{R}))",
            "queries / request",
        )
    ],
    "short",
    "A jump here is the classic N+1 query.",
)
ts(
    "Open connections",
    [(f"sum by (database) (django_db_connections_total{{{SEL}}})", "{{database}}")],
    "short",
)
ts(
    "Connection pool (PostgreSQL OPTIONS pool)",
    [
        (f"sum by (database) (django_db_pool_size{{{SEL}}})", "open {{database}}"),
        (f"sum by (database) (django_db_pool_idle{{{SEL}}})", "idle {{database}}"),
        (f"sum by (database) (django_db_pool_waiting{{{SEL}}})", "waiting {{database}}"),
        (f"sum by (database) (django_db_pool_max{{{SEL}}})", "max {{database}}"),
    ],
    "short",
    "Only with Django 5.1+'s PostgreSQL connection pool; empty otherwise.",
)
flush()

# ---------- Cache ----------
row("Cache")
ts(
    "Hit ratio by cache",
    [
        (
            f"sum by (cache) (rate(django_cache_hits_total{{{SEL}}}{R}))"
            f" / (sum by (cache) (rate(django_cache_hits_total{{{SEL}}}{R}))"
            f" + sum by (cache) (rate(django_cache_misses_total{{{SEL}}}{R})))",
            "{{cache}}",
        )
    ],
    "percentunit",
    "Hits and misses are counted per key, as Redis counts them.",
    minv=0,
    maxv=1,
)
ts(
    "Cache operations / s",
    [
        (f"sum by (cache) (rate(django_cache_hits_total{{{SEL}}}{R}))", "hits {{cache}}"),
        (f"sum by (cache) (rate(django_cache_misses_total{{{SEL}}}{R}))", "misses {{cache}}"),
        (f"sum by (cache) (rate(django_cache_sets_total{{{SEL}}}{R}))", "sets {{cache}}"),
        (f"sum by (cache) (rate(django_cache_deletes_total{{{SEL}}}{R}))", "deletes {{cache}}"),
    ],
    "ops",
)
ts(
    "Cache errors / s",
    [(f"sum by (cache, operation) (rate(django_cache_errors_total{{{SEL}}}{R}))", "{{cache}} {{operation}}")],
    "ops",
    "Operations that raised: backend down, bad key.",
)
flush()

# ---------- Process ----------
row("Process")
ts(
    "Resident memory",
    [(f"sum by (instance) (django_process_memory_bytes{{{SEL}}})", "{{instance}}")],
    "bytes",
    "RSS summed over the live processes of each instance (alert DjangoMemoryGrowth).",
)
ts(
    "Resident memory by worker",
    [(f"django_process_memory_bytes{{{SEL}}}", "{{instance}} slot {{slot}}")],
    "bytes",
    "One series per live worker in multiprocess mode (label slot: its slot number in the store), "
    "to spot a leaking one.",
)
ts(
    "CPU",
    [(f"sum by (instance) (django_process_cpu_percent{{{SEL}}})", "{{instance}}")],
    "percent",
    "Percent of one core, measured between scrapes.",
)
ts("Threads", [(f"sum by (instance) (django_process_threads_total{{{SEL}}})", "{{instance}}")], "short", w=8)
ts(
    "Open file descriptors",
    [(f"sum by (instance) (django_process_open_files_total{{{SEL}}})", "{{instance}}")],
    "short",
    w=8,
)
ts(
    "GC collections / s",
    [(f"sum by (generation) (rate(django_python_gc_collections_total{{{SEL}}}{R}))", "gen {{generation}}")],
    "ops",
    w=8,
)
ts(
    "CPU seconds / s (prometheus_client process collector)",
    [(f"sum by (instance) (rate(process_cpu_seconds_total{{{SEL}}}{R}))", "{{instance}}")],
    "percentunit",
    "process_* and python_* series come from prometheus_client's default collectors. They describe the "
    "one process that answered the scrape, so in multiprocess mode (PROMETHEUS_MULTIPROC_DIR) they are "
    "left out, as prometheus_client does: use the django_process_* panels, summed over live workers.",
    w=8,
)
ts(
    "Memory (prometheus_client process collector)",
    [
        (f"max by (instance) (process_resident_memory_bytes{{{SEL}}})", "resident {{instance}}"),
        (f"max by (instance) (process_virtual_memory_bytes{{{SEL}}})", "virtual {{instance}}"),
    ],
    "bytes",
    w=8,
)
ts(
    "File descriptors used / limit",
    [
        (
            f"max by (instance) (process_open_fds{{{SEL}}}) / max by (instance) (process_max_fds{{{SEL}}})",
            "{{instance}}",
        )
    ],
    "percentunit",
    w=8,
    minv=0,
)
ts(
    "Uptime",
    [(f"time() - max by (instance) (process_start_time_seconds{{{SEL}}})", "{{instance}}")],
    "s",
    w=8,
)
ts(
    "Python GC objects collected / s",
    [
        (
            f"sum by (generation) (rate(python_gc_objects_collected_total{{{SEL}}}{R}))",
            "collected gen {{generation}}",
        ),
        (
            f"sum by (generation) (rate(python_gc_objects_uncollectable_total{{{SEL}}}{R}))",
            "uncollectable gen {{generation}}",
        ),
        (f"sum by (generation) (rate(python_gc_collections_total{{{SEL}}}{R}))", "runs gen {{generation}}"),
    ],
    "ops",
    w=8,
)
ts(
    "Python version",
    [(f"max by (implementation, version) (python_info{{{SEL}}})", "{{implementation}} {{version}}")],
    "short",
    w=8,
)
flush()

# ---------- Users and business ----------
row("Users and business")
ts(
    "Model operations / s",
    [
        (f"sum by (model) (rate(django_model_inserts_total{{{SEL}}}{R}))", "insert {{model}}"),
        (f"sum by (model) (rate(django_model_updates_total{{{SEL}}}{R}))", "update {{model}}"),
        (f"sum by (model) (rate(django_model_deletes_total{{{SEL}}}{R}))", "delete {{model}}"),
    ],
    "ops",
    "Models listed in METRICS_MODELS, from Django's signals (bulk operations are not seen).",
    minv=0,
)
ts(
    "Logins and registrations / s",
    [
        (f"sum by (method) (rate(django_user_logins_total{{{SEL}}}{R}))", "login {{method}}"),
        (f"sum(rate(django_user_login_failures_total{{{SEL}}}{R}))", "failed login"),
        (f"sum(rate(django_user_registrations_total{{{SEL}}}{R}))", "registration"),
    ],
    "ops",
)
ts(
    "Active users",
    [(f"max(django_active_users_total{{{SEL}}})", "active users")],
    "short",
    "Users who logged in within METRICS_ACTIVE_USER_WINDOW.",
)
ts(
    "User activity / s",
    [(f"sum by (activity) (rate(django_user_activity_total{{{SEL}}}{R}))", "{{activity}}")],
    "ops",
    "Other activities passed to track_user_activity().",
)
ts(
    "Custom events / s",
    [(f"sum by (type, action) (rate(django_custom_metric_total{{{SEL}}}{R}))", "{{type}} {{action}}")],
    "ops",
    "track_custom_metric(type, action) and custom_metric_counter.",
)
ts(
    "Custom values",
    [(f"max by (type) (django_custom_metric_current{{{SEL}}})", "{{type}}")],
    "short",
    "track_custom_metric(..., gauge_value=...) and custom_metric_gauge.",
)
ts(
    "Label values folded into `other`",
    [
        (
            f"sum by (metric, label) (rate(django_metrics_labels_folded_total{{{SEL}}}{R}))",
            "{{metric}} {{label}}",
        )
    ],
    "ops",
    "Values refused by the label rules (too many distinct values, bad characters).",
)
flush()

# ---------- Celery ----------
row("Celery")
ts(
    "Tasks / s by status",
    [(f"sum by (status) (rate(celery_tasks_total{{{CSEL}}}{R}))", "{{status}}")],
    "ops",
    stack=True,
)
ts(
    "Failure ratio by task",
    [
        (
            f'sum by (task) (rate(celery_tasks_total{{{CSEL}, status="failure"}}{R}))'
            f" / sum by (task) (rate(celery_tasks_total{{{CSEL}}}{R}))",
            "{{task}}",
        )
    ],
    "percentunit",
    "Alert CeleryHighTaskFailureRatio fires above 10 %.",
    minv=0,
)
ts("Task duration p95 by task", [(q("celery_task_duration_seconds", 0.95, "task", CSEL), "{{task}}")], "s")
ts("Tasks / s by task", [(f"sum by (task) (rate(celery_tasks_total{{{CSEL}}}{R}))", "{{task}}")], "ops")
ts("Tasks running by task", [(f"sum by (task) (celery_tasks_in_progress{{{CSEL}}})", "{{task}}")], "short")
ts(
    "Queue wait p95 by task",
    [(q("celery_task_queue_wait_seconds", 0.95, "task", CSEL), "{{task}}")],
    "s",
    "From publish (or the ETA) to the start of the run.",
)
ts(
    "Workers up and pool processes",
    [
        (f"sum by (worker) (celery_worker_up{{{CSEL}}})", "up {{worker}}"),
        (f"sum by (worker) (celery_worker_pool_processes{{{CSEL}}})", "pool processes {{worker}}"),
    ],
    "short",
)
ts(
    "Seconds since the last worker heartbeat",
    [(f"time() - max by (worker) (celery_worker_last_heartbeat_timestamp_seconds{{{CSEL}}})", "{{worker}}")],
    "s",
    "Grows when a worker stops sending heartbeats.",
)
# The broker's backlog is read by every site instance (and worker port) at scrape time: one value
# per queue, whichever job read it, hence `max by (queue)` and no job selector.
ts(
    "Broker queue length",
    [("max by (queue) (celery_queue_length)", "{{queue}}")],
    "short",
    "Tasks waiting in the broker (alert CeleryQueueBacklogGrowing). Absent while the broker does "
    "not answer: see the read errors panel.",
    minv=0,
)
ts(
    "Tasks published / s by queue",
    [(f"sum by (queue) (rate(celery_tasks_published_total{R}))", "{{queue}}")],
    "ops",
    "Sent by the site and by workers (retries, chains); compare with Tasks / s to see who keeps up.",
    stack=True,
)
ts(
    "Consumers by queue",
    [
        ("max by (queue) (celery_queue_consumers)", "broker {{queue}}"),
        ("sum by (queue) (celery_worker_consuming)", "workers {{queue}}"),
    ],
    "short",
    "RabbitMQ's own count, and the queues live workers report (the only source on Redis). "
    "0 or absent: alert CeleryQueueWithoutConsumers.",
    minv=0,
)
ts(
    "Queue length read errors / s",
    [(f"sum by (instance) (rate(celery_queue_length_errors_total{R}))", "{{instance}}")],
    "ops",
    "Scrapes that found no answer from the broker within METRICS_CELERY_QUEUE_TIMEOUT "
    "(alert CeleryQueueLengthUnreadable).",
    minv=0,
)
flush()

# ---------- Health ----------
row("Health and scraping")
ts(
    "Health checks (1 = passing)",
    [(f"min by (check) (django_health_check_status{{{SEL}}})", "{{check}}")],
    "short",
    "The checks of /metrics/health/ (alert DjangoHealthCheckFailing).",
    minv=0,
    maxv=1,
)
ts(
    "Unapplied migrations",
    [(f"max by (database) (django_migrations_unapplied{{{SEL}}})", "{{database}}")],
    "short",
    "Alert DjangoUnappliedMigrations.",
)
ts(
    "Applied migrations",
    [(f"max by (database) (django_migrations_applied{{{SEL}}})", "{{database}}")],
    "short",
    "Per database alias; a step up is a deploy's migrations.",
)
ts(
    "Scrape duration",
    [(f"scrape_duration_seconds{{{SEL}}}", "{{instance}}")],
    "s",
    "Time Prometheus needs to read /metrics/.",
)
ts(
    "Metrics store problems / s",
    [(f"sum(rate(django_metrics_store_problems_total{{{SEL}}}{R}))", "problems")],
    "ops",
    "Corrupt, foreign or unreadable files met by the multiprocess store, failed writes. Should stay 0.",
)
ts(
    "Samples per scrape",
    [(f"scrape_samples_scraped{{{SEL}}}", "{{instance}}")],
    "short",
    "Series count of one scrape: a steady climb means a label with unbounded values.",
)
flush()


def var_query(name, label, query, multi, include_all, all_value=None, hide=0):
    v = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": include_all,
        "hide": hide,
        "current": {},
        "options": [],
        "regex": "",
    }
    if all_value is not None:
        v["allValue"] = all_value
    return v


dashboard = {
    "__inputs": [],
    "__requires": [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
    ],
    "annotations": {
        "list": [
            {
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            }
        ]
    },
    "description": "Django site instrumented with django-metrics-rs (metrics module): HTTP, database, cache, "
    "process, users and business metrics, Celery.",
    "editable": True,
    "graphTooltip": 1,
    "id": None,
    "links": [],
    "panels": panels,
    "refresh": "30s",
    "schemaVersion": 37,
    "tags": ["django", "prometheus", "django-metrics-rs"],
    "templating": {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "includeAll": False,
                "multi": False,
                "options": [],
                "refresh": 1,
                "regex": "",
            },
            var_query("job", "Job", "label_values(django_http_requests_total, job)", False, False),
            var_query(
                "instance",
                "Instance",
                'label_values(django_http_requests_total{job="$job"}, instance)',
                True,
                True,
                ".*",
            ),
            var_query("celery_job", "Celery job", "label_values(celery_tasks_total, job)", True, True, ".*"),
        ]
    },
    "time": {"from": "now-1h", "to": "now"},
    "timepicker": {},
    "timezone": "",
    "title": "Django (django-metrics-rs)",
    "uid": "django-metrics-rs",
    "version": 1,
    "weekStart": "",
}
print(json.dumps(dashboard, indent=2))
