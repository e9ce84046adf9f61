-- Single sign-on users (OpenID Connect): the provider's subject (`{issuer}#{sub}`) they are
-- linked to. NULL for local users. Unique: one provider account is one Medgate user.
ALTER TABLE users ADD COLUMN sso_subject TEXT;
CREATE UNIQUE INDEX users_sso_subject ON users (sso_subject);
