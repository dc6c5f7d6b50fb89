-- outbox-relay: least-privilege roles (docs/runbook.md, "Least-privilege database roles"). An example to adapt, NOT a migration:
-- `outbox-relay migrate` only applies files named NNNN_name.sql and never this one.
--
-- Two roles, each allowed only what it needs:
--   service role  the application writing its data and its events. May INSERT into
--                 <schema>.messages, and only the producer-facing columns (it cannot
--                 forge relay state such as published_at), and nothing else in the
--                 outbox schema: it cannot read, update or delete the outbox.
--   relay role    the outbox-relay sidecar. May use the outbox schema only: claim, mark
--                 and delete messages, read the migration ledger. It cannot insert
--                 messages and has no privilege on any table of the service.
-- The migrations themselves run as a third role that owns the outbox schema (the
-- service database's owner, or a DBA): `outbox-relay migrate`, or `migrate --print`
-- applied with psql. Neither role below may create objects.
--
-- Apply after the migrations, as the owner of the outbox schema (or a superuser), with
-- psql variables naming the schema and the two roles:
--
--   psql "$OWNER_DATABASE_URL" -v ON_ERROR_STOP=1 \
--        -v schema=outbox -v service_role=orders_app -v relay_role=orders_outbox_relay \
--        -f migrations/roles.example.sql
--
-- then give each role a password (psql: \password orders_app). Re-running the file is
-- safe: roles that exist are kept, grants are idempotent. Run it again after upgrading
-- outbox-relay when a new migration adds objects the relay reads.
-- test/integration/privileges.test.ts applies this file and checks every statement
-- below against a running relay and producer.

-- Roles: LOGIN, no other attribute (not superuser, cannot create databases or roles).
-- psql variables are not expanded inside $$ … $$, so the names travel as settings.
SELECT set_config('outbox_roles.service_role', :'service_role', false),
       set_config('outbox_roles.relay_role', :'relay_role', false);
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY[current_setting('outbox_roles.service_role'), current_setting('outbox_roles.relay_role')] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', role_name);
        END IF;
    END LOOP;
END
$$;

-- Both connect to this database (needed where CONNECT was revoked from PUBLIC).
GRANT CONNECT ON DATABASE :"DBNAME" TO :"service_role", :"relay_role";

-- The service: INSERT of the producer columns (README: the SQL contract), nothing else. The identity
-- column needs no grant on its sequence, and the optional NOTIFY trigger
-- (migrations/optional/) runs without any grant to the inserting role. No SELECT: producers must not use INSERT … RETURNING (the
-- producer library does not; it generates the message ids itself).
GRANT USAGE ON SCHEMA :"schema" TO :"service_role";
GRANT INSERT (message_id, exchange, routing_key, message_type, payload, body, content_type,
              headers, partition_key, correlation_id, available_at, expires_at)
    ON :"schema".messages TO :"service_role";

-- The relay: the claim (SELECT … FOR UPDATE SKIP LOCKED), marking published / failed /
-- parked (UPDATE), OUTBOX_RETENTION=0, the cleanup and `dead discard` (DELETE), and the
-- schema check at start (SELECT on the ledger); the audit trail of the operator commands
-- run as this role (`dead retry`, `dead discard`, `replay` write it, `audit` reads it, a
-- replay records its progress, the cleanup deletes old entries). LISTEN/NOTIFY and
-- advisory locks need no grant. `outbox-relay check` verifies exactly these table
-- privileges.
GRANT USAGE ON SCHEMA :"schema" TO :"relay_role";
GRANT SELECT, UPDATE, DELETE ON :"schema".messages TO :"relay_role";
GRANT SELECT ON :"schema".schema_migrations TO :"relay_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".audit TO :"relay_role";
-- The replicas' coordination (docs/scaling.md, "Replicas"): the leader's lease is read and renewed,
-- every replica registers itself. A standby that finds the leader frozen ends its
-- sessions with pg_terminate_backend, which needs no grant when all replicas use this one
-- role (a role may end its own sessions); replicas under different roles need
-- pg_signal_backend instead.
GRANT SELECT, UPDATE ON :"schema".relay_lease TO :"relay_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".relay_replicas TO :"relay_role";

-- `outbox-relay selftest` (docs/runbook.md, Self-test) inserts a canary message, then claims,
-- marks and deletes it: it needs the relay role's privileges above AND INSERT on
-- messages. Neither role here has both, on purpose (the relay may not insert, the
-- service may not read or delete). Run it as the schema's owner (the
-- migration role; deploy/kubernetes/selftest-job.yaml does), or as a role of its own,
-- created like the two above, with these grants (deliberately not applied by this file):
--
--   GRANT USAGE ON SCHEMA outbox TO orders_outbox_selftest;
--   GRANT SELECT, INSERT, UPDATE, DELETE ON outbox.messages TO orders_outbox_selftest;
--   GRANT SELECT ON outbox.schema_migrations TO orders_outbox_selftest;
