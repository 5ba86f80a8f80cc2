#!/usr/bin/env python3
"""Task board: a small web app on Postgres, the demo project of Ken.

Routes:
    GET  /                      HTML list of tasks, filtered by ?status= and ?project=
    GET  /tasks/<id>            HTML page of one task with its labels and comments
    POST /tasks                 create a task from the form on /, then redirect to it
    POST /tasks/<id>/status     move a task to another status, then redirect back
    GET  /api/tasks             JSON list of tasks with their project and assignee,
                                filtered by ?limit=, ?status= and ?project=
    GET  /healthz               200 when `SELECT 1` succeeds, 503 otherwise
    GET  /static/<file>         files from the static/ folder next to this file

Configuration comes from the environment: DATABASE_URL (a libpq connection string or
URI) or the libpq variables PGHOST, PGPORT, PGUSER, PGDATABASE and friends, and PORT
(default 8080). The server listens on 0.0.0.0.

It needs only Python 3 and psycopg2, as Debian packages them (python3-psycopg2).
"""

import contextlib
import datetime
import html
import json
import logging
import mimetypes
import os
import re
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg2
import psycopg2.errors
import psycopg2.extras

log = logging.getLogger("demo-app")

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Status values as the tasks table's CHECK constraint allows them, with their labels.
STATUSES = {
    "todo": "To do",
    "in_progress": "In progress",
    "review": "In review",
    "done": "Done",
}
PRIORITIES = {1: "Urgent", 2: "High", 3: "Normal", 4: "Low"}

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
# Number of tasks on the HTML list. The API's ?limit= goes up to MAX_LIMIT.
PAGE_SIZE = 100
# Maximum size of a form body, in bytes. The forms post a title and three small numbers.
MAX_FORM_BYTES = 16 * 1024


class BadRequest(Exception):
    """Raised for an invalid query parameter or form field. The message names it."""


class NotFound(Exception):
    """Raised for a path or a row that does not exist."""


class Database:
    """A pool of at most `size` connections, shared by the request threads.

    A request waits while every connection is in use. Connections open on first use,
    so the server starts while Postgres is still down, and stay open between requests.
    psycopg2.pool is not used because it closes every connection above its minimum
    when the connection is returned, and opens the minimum eagerly at start.
    """

    def __init__(self, dsn, size=8):
        self._dsn = dsn
        self._slots = threading.BoundedSemaphore(size)
        self._idle = []
        self._idle_lock = threading.Lock()

    def _connect(self):
        return psycopg2.connect(
            self._dsn,
            connect_timeout=5,
            application_name="demo-app",
            # Keeps a slow query from holding a request thread for long.
            options="-c statement_timeout=10000",
        )

    @contextlib.contextmanager
    def transaction(self):
        """Yield a cursor that returns rows as dicts, inside one transaction.

        The transaction commits when the block ends normally and rolls back when it
        raises. A connection that failed at the protocol level is closed, not reused.
        A failed connection also closes the idle ones, because they usually failed
        for the same reason (a Postgres restart). So after a restart one request
        fails with OperationalError (a 503), and the next ones open new connections.
        """
        with self._slots:
            with self._idle_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            reusable = True
            try:
                with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                    yield cur
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                reusable = False
                self.close()
                raise
            finally:
                if reusable and not conn.closed:
                    with self._idle_lock:
                        self._idle.append(conn)
                else:
                    conn.close()

    def close(self):
        """Close the idle connections."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# ---------------------------------------------------------------------------
# Queries


TASK_COLUMNS = """
    t.id, t.title, t.description, t.status, t.priority, t.due_date,
    t.created_at, t.updated_at,
    p.id AS project_id, p.slug AS project_slug, p.name AS project_name,
    a.id AS assignee_id, a.name AS assignee_name, a.email AS assignee_email,
    ARRAY(
        SELECT l.name FROM task_labels tl JOIN labels l ON l.id = tl.label_id
        WHERE tl.task_id = t.id ORDER BY l.name
    ) AS labels,
    (SELECT count(*) FROM comments c WHERE c.task_id = t.id) AS comment_count
"""

TASK_JOINS = """
    FROM tasks t
    JOIN projects p ON p.id = t.project_id
    LEFT JOIN people a ON a.id = t.assignee_id
"""


def list_tasks(cur, status=None, project=None, limit=DEFAULT_LIMIT):
    """Return the newest tasks, optionally only those with a status or project slug."""
    cur.execute(
        f"""
        SELECT {TASK_COLUMNS}
        {TASK_JOINS}
        WHERE (%(status)s::text IS NULL OR t.status = %(status)s)
          AND (%(project)s::text IS NULL OR p.slug = %(project)s)
        ORDER BY t.created_at DESC, t.id DESC
        LIMIT %(limit)s
        """,
        {"status": status, "project": project, "limit": limit},
    )
    return cur.fetchall()


def count_tasks_by_status(cur, project=None):
    """Return {status: number of tasks}, for every status, in one project or all."""
    cur.execute(
        """
        SELECT t.status, count(*) AS n
        FROM tasks t JOIN projects p ON p.id = t.project_id
        WHERE %(project)s::text IS NULL OR p.slug = %(project)s
        GROUP BY t.status
        """,
        {"project": project},
    )
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({row["status"]: row["n"] for row in cur.fetchall()})
    return counts


def get_task(cur, task_id):
    cur.execute(f"SELECT {TASK_COLUMNS} {TASK_JOINS} WHERE t.id = %s", (task_id,))
    task = cur.fetchone()
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return task


def list_comments(cur, task_id):
    cur.execute(
        """
        SELECT c.id, c.body, c.created_at, a.name AS author_name
        FROM comments c JOIN people a ON a.id = c.author_id
        WHERE c.task_id = %s
        ORDER BY c.created_at, c.id
        """,
        (task_id,),
    )
    return cur.fetchall()


def list_projects(cur):
    cur.execute("SELECT id, slug, name FROM projects ORDER BY name")
    return cur.fetchall()


def list_people(cur):
    cur.execute("SELECT id, name FROM people ORDER BY name")
    return cur.fetchall()


def task_to_json(row):
    """Shape a row from list_tasks or get_task as the API returns it."""
    assignee = None
    if row["assignee_id"] is not None:
        assignee = {
            "id": row["assignee_id"],
            "name": row["assignee_name"],
            "email": row["assignee_email"],
        }
    return {
        "id": row["id"],
        "title": row["title"],
        "description": row["description"],
        "status": row["status"],
        "priority": row["priority"],
        "due_date": row["due_date"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "labels": row["labels"],
        "comment_count": row["comment_count"],
        "project": {
            "id": row["project_id"],
            "slug": row["project_slug"],
            "name": row["project_name"],
        },
        "assignee": assignee,
    }


# ---------------------------------------------------------------------------
# Input checks


def parse_limit(values):
    if not values:
        return DEFAULT_LIMIT
    raw = values[-1]
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"invalid limit {raw!r}: expected a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def parse_status(values, allow_empty=True):
    raw = values[-1] if values else ""
    if raw == "" and allow_empty:
        return None
    if raw not in STATUSES:
        raise BadRequest(f"invalid status {raw!r}: expected one of {', '.join(STATUSES)}")
    return raw


def parse_project_slug(values):
    raw = values[-1] if values else ""
    if raw == "":
        return None
    if not re.fullmatch(r"[a-z0-9-]{1,64}", raw):
        raise BadRequest(f"invalid project {raw!r}: expected a project slug such as 'billing'")
    return raw


def parse_id(raw, field):
    if not raw.isdigit() or not 1 <= int(raw) < 2**31:
        raise BadRequest(f"invalid {field} {raw!r}: expected a positive whole number")
    return int(raw)


def json_default(value):
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


# ---------------------------------------------------------------------------
# HTML


def esc(value):
    return html.escape("" if value is None else str(value))


def render_page(title, body):
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · Task board</title>
<link rel="stylesheet" href="/static/style.css">
</head>
<body>
<header class="site-header">
  <a class="brand" href="/">Task board</a>
  <nav><a href="/api/tasks?limit=20">API</a></nav>
</header>
<main>
{body}
</main>
</body>
</html>
"""


def render_status_badge(status):
    return f'<span class="badge status-{esc(status)}">{esc(STATUSES[status])}</span>'


def render_labels(labels):
    return "".join(f'<span class="label">{esc(name)}</span>' for name in labels)


def render_board(tasks, counts, projects, people, status, project):
    """Render the task list with its filters and the form for a new task."""

    def filter_link(label, new_status, count):
        query = {key: value for key, value in (("status", new_status), ("project", project)) if value}
        current = " current" if new_status == status else ""
        href = "/?" + urlencode(query) if query else "/"
        return f'<a class="button filter{current}" href="{esc(href)}">{esc(label)} <span class="count">{count}</span></a>'

    filters = [filter_link("All", None, sum(counts.values()))]
    filters += [filter_link(label, key, counts[key]) for key, label in STATUSES.items()]

    project_options = ['<option value="">All projects</option>']
    for p in projects:
        selected = " selected" if p["slug"] == project else ""
        project_options.append(f'<option value="{esc(p["slug"])}"{selected}>{esc(p["name"])}</option>')

    rows = []
    for t in tasks:
        due = t["due_date"].isoformat() if t["due_date"] else ""
        rows.append(
            "<tr>"
            f'<td class="num">{t["id"]}</td>'
            f'<td><a href="/tasks/{t["id"]}">{esc(t["title"])}</a> {render_labels(t["labels"])}</td>'
            f'<td>{esc(t["project_name"])}</td>'
            f'<td>{esc(t["assignee_name"] or "Unassigned")}</td>'
            f"<td>{render_status_badge(t['status'])}</td>"
            f'<td class="priority-{t["priority"]}">{esc(PRIORITIES[t["priority"]])}</td>'
            f"<td>{esc(due)}</td>"
            f'<td class="num">{t["comment_count"]}</td>'
            "</tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="8" class="empty">No tasks match these filters.</td></tr>')

    shown_count = len(tasks)
    total = counts[status] if status else sum(counts.values())
    project_choices = "".join(f'<option value="{p["id"]}">{esc(p["name"])}</option>' for p in projects)
    people_choices = "".join(f'<option value="{p["id"]}">{esc(p["name"])}</option>' for p in people)
    priority_choices = "".join(
        f'<option value="{value}"{" selected" if value == 3 else ""}>{label}</option>'
        for value, label in PRIORITIES.items()
    )
    hidden_status = f'<input type="hidden" name="status" value="{esc(status)}">' if status else ""

    body = f"""
<h1>Tasks</h1>
<div class="toolbar">
  <div class="filters">{"".join(filters)}</div>
  <form class="project-filter" method="get" action="/">
    {hidden_status}
    <select name="project" aria-label="Project">{"".join(project_options)}</select>
    <button type="submit" class="button">Filter</button>
  </form>
</div>
<p class="summary">Showing the {shown_count} newest of {total} tasks.</p>
<table class="tasks">
<thead><tr><th>#</th><th>Title</th><th>Project</th><th>Assignee</th><th>Status</th><th>Priority</th><th>Due</th><th>Comments</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody>
</table>
<section class="card">
<h2>New task</h2>
<form class="new-task" method="post" action="/tasks">
  <label>Title <input name="title" required maxlength="200"></label>
  <label>Project <select name="project_id">{project_choices}</select></label>
  <label>Assignee <select name="assignee_id"><option value="">Unassigned</option>{people_choices}</select></label>
  <label>Priority <select name="priority">{priority_choices}</select></label>
  <button type="submit" class="button primary">Create task</button>
</form>
</section>
"""
    return render_page("Tasks", body)


def render_task(task, comments):
    status_buttons = "".join(
        f'<button type="submit" class="button" name="status" value="{key}">{esc(label)}</button>'
        for key, label in STATUSES.items()
        if key != task["status"]
    )
    comment_items = "".join(
        f'<li><div class="meta">{esc(c["author_name"])} · {c["created_at"]:%Y-%m-%d %H:%M}</div>'
        f'<p>{esc(c["body"])}</p></li>'
        for c in comments
    )
    if not comment_items:
        comment_items = '<li class="empty">No comments yet.</li>'
    due = task["due_date"].isoformat() if task["due_date"] else "none"
    body = f"""
<p><a href="/">← All tasks</a></p>
<h1>{esc(task["title"])}</h1>
<p class="task-meta">
  {render_status_badge(task["status"])}
  <span class="priority-{task["priority"]}">{esc(PRIORITIES[task["priority"]])}</span>
  · {esc(task["project_name"])}
  · assigned to {esc(task["assignee_name"] or "nobody")}
  · due {esc(due)}
  {render_labels(task["labels"])}
</p>
<p>{esc(task["description"])}</p>
<form class="status-form" method="post" action="/tasks/{task["id"]}/status">
  Move to: {status_buttons}
</form>
<section class="card">
<h2>Comments ({len(comments)})</h2>
<ul class="comments">{comment_items}</ul>
</section>
"""
    return render_page(task["title"], body)


# ---------------------------------------------------------------------------
# HTTP


class Handler(BaseHTTPRequestHandler):
    server_version = "demo-app/1.0"
    # Set on the class in main(), before the server accepts requests.
    db = None

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method):
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        path = url.path
        try:
            if method in ("GET", "HEAD"):
                if path == "/":
                    self._board(query)
                elif path == "/api/tasks":
                    self._api_tasks(query)
                elif path == "/healthz":
                    self._healthz()
                elif path.startswith("/static/"):
                    self._static(path[len("/static/"):])
                elif match := re.fullmatch(r"/tasks/([^/]+)", path):
                    self._task(parse_id(match[1], "task id"))
                else:
                    raise NotFound(f"no page at {path}")
            elif method == "POST":
                if path == "/tasks":
                    self._create_task()
                elif match := re.fullmatch(r"/tasks/([^/]+)/status", path):
                    self._set_status(parse_id(match[1], "task id"))
                else:
                    raise NotFound(f"no form handler at {path}")
        except BadRequest as error:
            self._send_error(HTTPStatus.BAD_REQUEST, str(error))
        except NotFound as error:
            self._send_error(HTTPStatus.NOT_FOUND, str(error))
        except psycopg2.OperationalError as error:
            log.error("database unavailable for %s %s: %s", method, self.path, str(error).strip())
            self._send_error(HTTPStatus.SERVICE_UNAVAILABLE, "the database is unavailable; try again shortly")
        except Exception:
            log.exception("request failed: %s %s", method, self.path)
            self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; the server log has the details")

    # Pages and endpoints

    def _board(self, query):
        status = parse_status(query.get("status"))
        project = parse_project_slug(query.get("project"))
        with self.db.transaction() as cur:
            tasks = list_tasks(cur, status=status, project=project, limit=PAGE_SIZE)
            counts = count_tasks_by_status(cur, project=project)
            projects = list_projects(cur)
            people = list_people(cur)
        self._send_html(render_board(tasks, counts, projects, people, status, project))

    def _task(self, task_id):
        with self.db.transaction() as cur:
            task = get_task(cur, task_id)
            comments = list_comments(cur, task_id)
        self._send_html(render_task(task, comments))

    def _api_tasks(self, query):
        limit = parse_limit(query.get("limit"))
        status = parse_status(query.get("status"))
        project = parse_project_slug(query.get("project"))
        with self.db.transaction() as cur:
            tasks = list_tasks(cur, status=status, project=project, limit=limit)
        self._send_json(HTTPStatus.OK, {"count": len(tasks), "tasks": [task_to_json(t) for t in tasks]})

    def _healthz(self):
        try:
            with self.db.transaction() as cur:
                cur.execute("SELECT 1 AS ok")
                cur.fetchone()
        except psycopg2.Error as error:
            log.warning("health check failed: %s", str(error).strip())
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unavailable", "error": str(error).strip()})
            return
        self._send_json(HTTPStatus.OK, {"status": "ok"})

    def _static(self, name):
        # Resolve symlinks and "..", then reject anything outside STATIC_DIR.
        path = (STATIC_DIR / name).resolve()
        if STATIC_DIR not in path.parents or not path.is_file():
            raise NotFound(f"no static file {name!r}")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type.startswith("text/"):
            content_type += "; charset=utf-8"
        # no-cache makes the browser fetch the file again on every load, so an edit
        # such as a new theme colour shows up on the next reload.
        self._send(HTTPStatus.OK, content_type, path.read_bytes(), {"Cache-Control": "no-cache"})

    def _create_task(self):
        form = self._read_form()
        title = (form.get("title") or [""])[-1].strip()
        if not 1 <= len(title) <= 200:
            raise BadRequest("invalid title: expected 1 to 200 characters")
        project_id = parse_id((form.get("project_id") or [""])[-1], "project_id")
        assignee_raw = (form.get("assignee_id") or [""])[-1]
        assignee_id = parse_id(assignee_raw, "assignee_id") if assignee_raw else None
        priority_raw = (form.get("priority") or ["3"])[-1]
        if priority_raw not in ("1", "2", "3", "4"):
            raise BadRequest(f"invalid priority {priority_raw!r}: expected 1, 2, 3 or 4")

        # The demo has no logins, so the person with the lowest id is recorded as the
        # reporter.
        with self.db.transaction() as cur:
            try:
                cur.execute(
                    """
                    INSERT INTO tasks (project_id, reporter_id, assignee_id, title, priority)
                    VALUES (%s, (SELECT min(id) FROM people), %s, %s, %s)
                    RETURNING id
                    """,
                    (project_id, assignee_id, title, int(priority_raw)),
                )
            except psycopg2.errors.ForeignKeyViolation as error:
                if error.diag.constraint_name == "tasks_assignee_id_fkey":
                    raise BadRequest(f"invalid assignee_id {assignee_id}: no such person") from error
                raise BadRequest(f"invalid project_id {project_id}: no such project") from error
            except psycopg2.errors.NotNullViolation as error:
                raise BadRequest("cannot create a task: the people table is empty; seed the database first") from error
            task_id = cur.fetchone()["id"]

        log.info("created task %d in project %d", task_id, project_id)
        self._redirect(f"/tasks/{task_id}")

    def _set_status(self, task_id):
        form = self._read_form()
        status = parse_status(form.get("status"), allow_empty=False)
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE tasks SET status = %s, updated_at = now() WHERE id = %s",
                (status, task_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"task {task_id} not found")
        log.info("moved task %d to %s", task_id, status)
        self._redirect(f"/tasks/{task_id}")

    # Request and response helpers

    def _read_form(self):
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            raise BadRequest(f"invalid Content-Type {content_type!r}: expected application/x-www-form-urlencoded")
        length_raw = self.headers.get("Content-Length", "")
        if not length_raw.isdigit() or int(length_raw) > MAX_FORM_BYTES:
            raise BadRequest(f"invalid Content-Length {length_raw!r}: expected at most {MAX_FORM_BYTES} bytes")
        body = self.rfile.read(int(length_raw))
        return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)

    def _send_html(self, page):
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode("utf-8"))

    def _send_json(self, status, payload):
        body = json.dumps(payload, default=json_default, ensure_ascii=False, indent=2) + "\n"
        self._send(status, "application/json; charset=utf-8", body.encode("utf-8"))

    def _send_error(self, status, message):
        if self.path.startswith("/api/") or self.path == "/healthz":
            self._send_json(status, {"error": message})
        else:
            page = render_page(status.phrase, f"<h1>{status.value} {esc(status.phrase)}</h1><p>{esc(message)}</p>")
            self._send(status, "text/html; charset=utf-8", page.encode("utf-8"))

    def _redirect(self, location):
        # 303 See Other makes the browser follow up with a GET, so a reload does not
        # submit the form again.
        self._send(HTTPStatus.SEE_OTHER, "text/plain; charset=utf-8", b"", {"Location": location})

    def _send(self, status, content_type, body, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):
        log.info("%s %s", self.address_string(), format % args)


def main():
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    port_raw = os.environ.get("PORT", "8080")
    if not port_raw.isdigit() or not 1 <= int(port_raw) <= 65535:
        sys.exit(f"invalid PORT {port_raw!r}: expected a TCP port from 1 to 65535")

    # An empty DSN makes libpq read PGHOST, PGUSER, PGDATABASE and the other PG* variables.
    Handler.db = Database(os.environ.get("DATABASE_URL", ""))
    server = ThreadingHTTPServer(("0.0.0.0", int(port_raw)), Handler)

    # SIGTERM (from `docker stop` or Ken) ends serve_forever like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    log.info("listening on http://0.0.0.0:%s", port_raw)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        Handler.db.close()
        log.info("stopped")


if __name__ == "__main__":
    main()
