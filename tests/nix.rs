//! End-to-end tests for nix (filled in by its issue).

use crashcart_tests as _;
