//! End-to-end tests for inject (filled in by its issue).

use crashcart_tests as _;
