DROP TABLE alert_transitions;
