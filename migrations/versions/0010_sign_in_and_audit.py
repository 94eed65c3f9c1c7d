"""Sign-in and audit: passwords, session tokens, an append-only audit log with before and after, token use per day

- users.password_hash: an argon2 hash (pwdlib), set with `wangge users password`; NULL: tokens only.
- api_tokens.kind: 'api' for tokens handed to programs, 'session' for the cookie a sign-in sets.
- audit_log gets `before` and `after` and becomes append-only like incident_events (a trigger refuses UPDATE
  and DELETE, except the actor becoming NULL when a user is deleted); an index on `at` serves GET /audit.
- token_use counts each token's requests per day (flushed by every worker; see api.deps.TokenUse).
- incident_events gets an index on `at`, so that GET /audit pages incident transitions in time order.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

APPEND_ONLY = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- ON DELETE SET NULL of a deleted actor is the one change allowed
    IF TG_OP = 'UPDATE' AND NEW.actor_id IS NULL
       AND (NEW.id, NEW.at, NEW.action, NEW.target, NEW.detail, NEW.before, NEW.after)
           IS NOT DISTINCT FROM (OLD.id, OLD.at, OLD.action, OLD.target, OLD.detail, OLD.before, OLD.after) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP;
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
"""


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN password_hash text")
    op.execute("ALTER TABLE api_tokens ADD COLUMN kind varchar(7) NOT NULL DEFAULT 'api' "
               "CONSTRAINT api_tokens_kind CHECK (kind IN ('api', 'session'))")
    op.execute("ALTER TABLE audit_log ADD COLUMN before jsonb, ADD COLUMN after jsonb")
    op.execute("CREATE INDEX audit_log_at ON audit_log (at, id)")
    op.execute("CREATE INDEX incident_events_at ON incident_events (at, id)")
    op.execute(APPEND_ONLY)
    op.execute("CREATE TABLE token_use (token_id integer NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE, "
               "day date NOT NULL, uses bigint NOT NULL, PRIMARY KEY (token_id, day))")


def downgrade() -> None:
    op.execute("DROP TABLE token_use")
    op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
    op.execute("DROP FUNCTION audit_log_append_only()")
    op.execute("DROP INDEX incident_events_at")
    op.execute("DROP INDEX audit_log_at")
    op.execute("ALTER TABLE audit_log DROP COLUMN before, DROP COLUMN after")
    op.execute("ALTER TABLE api_tokens DROP COLUMN kind")
    op.execute("ALTER TABLE users DROP COLUMN password_hash")
