/** Text made safe inside HTML (element content and quoted attributes). No imports: the dashboard's page loads it too. */
export const escapeHtml = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
