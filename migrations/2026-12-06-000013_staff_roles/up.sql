-- A merchant's staff are owners (who manage its links and details) or members (who see and
-- refund). Links made before roles existed could manage, so they become owners; a new link is a
-- member unless it says otherwise. That a merchant keeps at least one owner is checked under the
-- customer's row lock by the one function that removes or demotes an owner.
ALTER TABLE user_customers ADD COLUMN role TEXT NOT NULL DEFAULT 'owner' CHECK (role IN ('owner', 'member'));
ALTER TABLE user_customers ALTER COLUMN role SET DEFAULT 'member';
