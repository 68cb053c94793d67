-- The alert transitions (an alert starts firing, or is resolved), kept beside the history so
-- that `/alerts/history` survives a restart; deleted with the history by its retention job.
-- Keep in step with ../../postgres/<same folder>/up.sql.
-- state: firing or resolved; severity and message: the firing alert's (NULL when resolved).
CREATE TABLE alert_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at TIMESTAMP NOT NULL,
    alert_type TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT,
    message TEXT
);

CREATE INDEX idx_alert_transitions_at ON alert_transitions (occurred_at);
