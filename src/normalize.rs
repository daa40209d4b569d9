//! Text → the forms an attacker hides it in (see the ward).
