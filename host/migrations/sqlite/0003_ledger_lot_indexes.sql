-- Lots with points left, per customer in expiry order: spends read only the first few, and
-- balances sum only the expired ones (the balance less those is what is unexpired), however
-- many lots a customer has collected. Spent lots drop out of the index.
DROP INDEX ledger_lots_by_account;
CREATE INDEX ledger_lots_open ON ledger_lots (account_id, expires_at_ms, id) WHERE remaining > 0;

-- Reversing an award finds the award's own lot by its posting.
CREATE INDEX ledger_lots_by_award ON ledger_lots (award_posting);
