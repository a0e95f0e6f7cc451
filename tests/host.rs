//! End-to-end tests for host (filled in by its issue).

use crashcart_tests as _;
