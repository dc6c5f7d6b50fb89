-- outbox-relay migration 0005: replicas that cooperate (README "Replicas").
--
-- One relay runs beside every instance of the service, so a service of 12 pods has 12
-- relays against this database. They share the work through two small tables instead of
-- competing for the same rows:
--
-- 1. relay_lease: one row, the leader's lease. Only the replica named in it claims and
--    publishes, refreshes the gauges, watches for stalls and runs the cleanup; the others
--    are standbys that wait cheaply. The leader renews expires_at every second. A standby
--    takes over when the leader's transaction-level advisory lock is free (the leader's
--    process died: instant) or when the lease has expired (the leader froze: after a few
--    seconds); each takeover increases epoch, so a leader that wakes up after a freeze
--    finds out at its next renewal that it no longer leads.
-- 2. relay_replicas: one row per running replica (for `outbox-relay status`, and so that
--    the standbys share out their checks of the leader, whatever their number). A replica
--    refreshes seen_at every 15 seconds and deletes its row when it stops; the leader
--    deletes rows not seen for 10 minutes.
--
-- Both tables are tiny and updated in place (fillfactor 50: a renewal stays on its page).
-- Creating them is quick and changes no message.

CREATE TABLE relay_lease (
    -- One row: the lease of this outbox.
    singleton   boolean     PRIMARY KEY DEFAULT true,
    -- The leading replica (relay_replicas.replica_id), null while nobody leads.
    holder      text,
    -- Increased by every takeover.
    epoch       bigint      NOT NULL DEFAULT 0,
    -- When the holder took the lead.
    acquired_at timestamptz,
    -- The holder leads until then unless it renews; '-infinity' while nobody leads.
    expires_at  timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT relay_lease_one_row CHECK (singleton)
) WITH (fillfactor = 50);
COMMENT ON TABLE relay_lease IS
    'The lease of the leading outbox-relay replica (one row). Relay-owned.';
INSERT INTO relay_lease DEFAULT VALUES;

CREATE TABLE relay_replicas (
    -- Random, chosen by the replica at start; its database connections carry the
    -- application_name 'outbox-relay <replica_id>'.
    replica_id  text        PRIMARY KEY,
    host        text        NOT NULL,
    pid         integer     NOT NULL,
    version     text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);
COMMENT ON TABLE relay_replicas IS
    'The running outbox-relay replicas of this outbox (one row each). Relay-owned.';
