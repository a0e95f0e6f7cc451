//! End-to-end tests for imgbuild (filled in by its issue).

use crashcart_tests as _;
