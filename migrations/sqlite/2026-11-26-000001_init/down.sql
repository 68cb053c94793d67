DROP TABLE token_acquisition_history;
DROP TABLE tokens;
DROP TABLE account_credentials;
