-- Demo data for the task board: 12 projects, 60 people, 8 labels, 4000 tasks, 5000
-- task labels and 6000 comments.
--
-- The rows are computed from generate_series and fixed word lists, without random()
-- or now(), so every run produces the same data. Date arithmetic runs on timestamps
-- without time zone, converted from UTC at the end, because adding days to a
-- timestamptz depends on the session's time zone. The file empties the tables first,
-- so it can run again on a seeded database. It contains no BEGIN or COMMIT: run it in
-- one transaction, for example:
--   psql -v ON_ERROR_STOP=1 --single-transaction -d demo -f db/seed.sql

TRUNCATE comments, task_labels, labels, tasks, people, projects RESTART IDENTITY CASCADE;

INSERT INTO projects (id, slug, name, description, created_at)
SELECT id, slug, name, description,
       (timestamp '2024-08-05 09:00' + (id - 1) * interval '9 days') AT TIME ZONE 'UTC'
FROM (VALUES
    (1, 'checkout', 'Checkout', 'Cart, payment and order confirmation.'),
    (2, 'mobile-app', 'Mobile app', 'The iOS and Android apps.'),
    (3, 'billing', 'Billing', 'Invoices, subscriptions and dunning.'),
    (4, 'search', 'Search', 'Product search, filters and ranking.'),
    (5, 'admin-console', 'Admin console', 'Internal tools for account managers.'),
    (6, 'data-platform', 'Data platform', 'Event pipeline, warehouse and reports.'),
    (7, 'notifications', 'Notifications', 'E-mail, push and in-app messages.'),
    (8, 'onboarding', 'Onboarding', 'Sign-up, trial and first-run experience.'),
    (9, 'public-api', 'Public API', 'REST and webhook API for integrators.'),
    (10, 'design-system', 'Design system', 'Shared components, tokens and icons.'),
    (11, 'infrastructure', 'Infrastructure', 'Clusters, CI and observability.'),
    (12, 'support-tools', 'Support tools', 'Help centre and support inbox integrations.')
) AS p (id, slug, name, description);

-- 20 first names and 23 last names: person i gets first name i mod 20 and last name
-- i mod 23, and because 20 and 23 are coprime no pair repeats below 460 people.
INSERT INTO people (id, name, email, role, created_at)
WITH words AS (
    SELECT
        ARRAY['Amara', 'Ben', 'Chloé', 'Dmitri', 'Elif', 'Farah', 'Gustavo', 'Hana',
              'Isaac', 'Jun', 'Kwame', 'Lena', 'Mateo', 'Nadia', 'Oskar', 'Priya',
              'Quentin', 'Rosa', 'Sven', 'Yuki'] AS first_names,
        ARRAY['Okafor', 'Schneider', 'Dubois', 'Ivanova', 'Yılmaz', 'Haddad', 'Pereira',
              'Sato', 'Cohen', 'Li', 'Mensah', 'Novak', 'García', 'Rahman', 'Lindqvist',
              'Sharma', 'Moreau', 'Jansen', 'Kowalski', 'Tanaka', 'Murphy', 'Andersen',
              'Costa'] AS last_names,
        ARRAY['Engineer', 'Engineer', 'Engineer', 'Engineer', 'Engineer', 'Engineer',
              'Designer', 'Product manager', 'QA engineer', 'Engineering manager'] AS roles
), named AS (
    SELECT i,
           first_names[1 + (i - 1) % 20] AS first_name,
           last_names[1 + (i - 1) % 23] AS last_name,
           roles[1 + (i - 1) % 10] AS role
    FROM generate_series(1, 60) AS i, words
)
SELECT i,
       first_name || ' ' || last_name,
       translate(lower(first_name || '.' || last_name), 'éıí', 'eii') || '@example.com',
       role,
       (timestamp '2024-08-01 09:00' + i * interval '2 days') AT TIME ZONE 'UTC'
FROM named;

INSERT INTO labels (id, name, color) VALUES
    (1, 'bug', '#dc2626'),
    (2, 'feature', '#2563eb'),
    (3, 'chore', '#6b7280'),
    (4, 'docs', '#0d9488'),
    (5, 'security', '#7c3aed'),
    (6, 'performance', '#ea580c'),
    (7, 'ux', '#db2777'),
    (8, 'tech-debt', '#ca8a04');

-- Task i combines verb i mod 11, subject i mod 29 and qualifier i mod 13. The three
-- lengths are coprime, so all 4000 titles differ. Older tasks (low i) are more often
-- done. Tasks are 97 minutes apart, ending on 2025-06-02.
INSERT INTO tasks (id, project_id, reporter_id, assignee_id, title, description, status,
                   priority, due_date, created_at, updated_at)
WITH words AS (
    SELECT
        ARRAY['Fix', 'Add', 'Refactor', 'Document', 'Investigate', 'Remove', 'Speed up',
              'Migrate', 'Redesign', 'Write tests for', 'Clean up'] AS verbs,
        ARRAY['the login form validation', 'the CSV export of invoices',
              'password reset e-mails', 'the order history page',
              'push notification settings', 'the search results ranking',
              'dark mode in settings', 'the webhook retry queue',
              'two-factor authentication', 'the billing address form',
              'image uploads over 10 MB', 'the onboarding checklist',
              'rate limiting on the public API', 'the audit log view',
              'timezone handling in reports', 'rounding of cart totals',
              'single sign-on with Google', 'the invite-a-teammate flow',
              'pagination in admin tables', 'the nightly database backup',
              'error messages at checkout', 'the refund workflow',
              'deep links in the mobile app', 'the feature flag service',
              'keyboard navigation in menus', 'the PDF receipt layout',
              'stale caches after deploys', 'the GraphQL schema docs',
              'bulk editing of products'] AS subjects,
        ARRAY['', ' on Safari', ' for enterprise customers', ' on Android',
              ' in the EU region', ' behind a feature flag', ' for screen readers',
              ' before the autumn release', ' on slow connections', ' in staging',
              ' for new sign-ups', ' on iOS', ' in the admin console'] AS qualifiers,
        ARRAY['Customers reported this through the support inbox.',
              'Found during the last release review.',
              'Follow-up from the incident retrospective.',
              'Requested by the sales team for two large accounts.',
              'Part of the quarterly goals for this project.',
              'Small change, but it touches shared code: ask for a second review.',
              'Needs a short design review before implementation.'] AS descriptions,
        -- Weights priorities towards 3 (normal): 1 is urgent, 4 is low.
        ARRAY[1, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4] AS priorities
), numbered AS (
    SELECT i,
           -- 0 to 99 in a scattered order: i * 19 mod 100 takes every value once in
           -- any 100 consecutive tasks.
           (i * 19) % 100 AS pseudo_random,
           -- 15 for the newest task up to 75 for the oldest.
           15 + (4000 - i) * 60 / 4000 AS done_share,
           timestamp '2025-06-02 09:00' - (4000 - i) * interval '97 minutes' AS created_local
    FROM generate_series(1, 4000) AS i
), classified AS (
    SELECT n.*,
           CASE
               WHEN pseudo_random < done_share THEN 'done'
               WHEN pseudo_random < done_share + 10 THEN 'review'
               WHEN pseudo_random < done_share + 25 THEN 'in_progress'
               ELSE 'todo'
           END AS status
    FROM numbered AS n
)
SELECT i,
       1 + (i * 5 + i / 97) % 12,
       1 + (i * 13) % 60,
       CASE WHEN status = 'todo' AND i % 3 = 0 THEN NULL ELSE 1 + (i * 17 + i / 41) % 60 END,
       verbs[1 + i % 11] || ' ' || subjects[1 + i % 29] || qualifiers[1 + i % 13],
       descriptions[1 + i % 7],
       status,
       priorities[1 + (i * 4) % 11],
       CASE WHEN i % 4 = 0 THEN NULL ELSE created_local::date + 7 * (1 + i % 6) END,
       created_local AT TIME ZONE 'UTC',
       CASE
           WHEN status = 'todo' THEN created_local AT TIME ZONE 'UTC'
           ELSE (created_local + (1 + (i * 29) % 240) * interval '1 hour') AT TIME ZONE 'UTC'
       END
FROM classified, words;

-- Each task gets the label that fits its verb (a "Fix ..." task is a bug), and every
-- fourth task gets a second, different label.
INSERT INTO task_labels (task_id, label_id)
WITH verb_labels AS (
    -- Indexed like the verbs above: Fix, Add, Refactor, Document, Investigate, Remove,
    -- Speed up, Migrate, Redesign, Write tests for, Clean up.
    SELECT ARRAY[1, 2, 8, 4, 1, 3, 6, 3, 7, 3, 8] AS label_ids
), primary_labels AS (
    SELECT i, label_ids[1 + i % 11] AS label_id
    FROM generate_series(1, 4000) AS i, verb_labels
)
SELECT i, label_id FROM primary_labels
UNION ALL
SELECT i, 1 + (label_id - 1 + 1 + i % 7) % 8 FROM primary_labels WHERE i % 4 = 0;

-- Comment j goes to task 1 + j² mod 3989. 3989 is prime, so about half of the tasks get
-- comments (three on average) and the rest get none, as on a real board.
INSERT INTO comments (id, task_id, author_id, body, created_at)
WITH words AS (
    SELECT ARRAY[
        'I can reproduce this on staging.',
        'Could not reproduce locally. Which browser version was it?',
        'Picked this up, a pull request follows today.',
        'The fix is in review.',
        'Merged. It goes out with the next deploy.',
        'This also affects the mobile app.',
        'Added a regression test for this case.',
        'Blocked on the API change in the other project.',
        'Moved the due date: waiting for design.',
        'Customer confirmed that the workaround helps.',
        'Attached the logs from the failing run.',
        'Let''s pair on this tomorrow morning.',
        'Is this still relevant after the redesign?',
        'Split the remaining work into a separate task.',
        'Looks good to me.',
        'The root cause is a missing index on the events table.',
        'Needs a migration: I will write it after the release freeze.',
        'Checked with support: three more tickets mention this.',
        'Performance is back to normal after the change.',
        'Closing the loop: the release notes mention this now.'
    ] AS bodies
)
SELECT j,
       t.id,
       1 + (j * 23) % 60,
       bodies[1 + (j * 7) % 20],
       t.created_at + (1 + j % 96) * interval '35 minutes'
FROM generate_series(1, 6000) AS j
JOIN tasks AS t ON t.id = 1 + (j::bigint * j) % 3989
CROSS JOIN words;

-- The inserts above set the ids explicitly, so move each identity sequence past them.
-- Rows the app inserts later then get the next free id.
SELECT setval(pg_get_serial_sequence('projects', 'id'), (SELECT max(id) FROM projects));
SELECT setval(pg_get_serial_sequence('people', 'id'), (SELECT max(id) FROM people));
SELECT setval(pg_get_serial_sequence('labels', 'id'), (SELECT max(id) FROM labels));
SELECT setval(pg_get_serial_sequence('tasks', 'id'), (SELECT max(id) FROM tasks));
SELECT setval(pg_get_serial_sequence('comments', 'id'), (SELECT max(id) FROM comments));

ANALYZE projects, people, labels, tasks, task_labels, comments;
