//! crashcart: sideload a tool image into a running container.
