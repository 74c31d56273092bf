// OAuth 2.0 Form Post Response Mode: submit the hidden form at once.
document.getElementById("form-post").submit();
