// Builds the panel into one self-contained `dist/management.html`: the JavaScript and
// CSS chunks are inlined into the page, so the server embeds a single file and the page
// needs no other request. The build is deterministic (no hashes or dates end up in the
// file), which `cargo xtask ci` relies on to prove the committed file matches the sources.
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';

/** Inlines every emitted JS chunk and CSS asset into the HTML page and drops the files. */
function inlineIntoPage(): Plugin {
  return {
    name: 'cpamp-inline-into-page',
    enforce: 'post',
    generateBundle(_options, bundle) {
      const page = Object.values(bundle).find((item) => item.fileName.endsWith('.html'));
      if (!page || page.type !== 'asset') {
        this.error('the panel build emitted no HTML page');
      }
      let html = String(page.source);
      for (const [name, item] of Object.entries(bundle)) {
        if (item.type === 'chunk') {
          const tag = new RegExp(`<script[^>]*src="[^"]*/${escape(name)}"[^>]*></script>`);
          if (!tag.test(html)) this.error(`script ${name} is not referenced by the page`);
          // `</script` inside the code would end the inline element early.
          const code = item.code.replace(/<\/script/gi, '<\\/script').trim();
          html = html.replace(tag, () => `<script type="module">${code}</script>`);
          delete bundle[name];
        } else if (name.endsWith('.css')) {
          const tag = new RegExp(`<link[^>]*href="[^"]*/${escape(name)}"[^>]*>`);
          if (!tag.test(html)) this.error(`stylesheet ${name} is not referenced by the page`);
          const css = String(item.source).replace(/<\/style/gi, '<\\/style').trim();
          html = html.replace(tag, () => `<style>${css}</style>`);
          delete bundle[name];
        }
      }
      page.source = html;
    },
  };
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export default defineConfig({
  root: 'src',
  base: './',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  plugins: [inlineIntoPage()],
  build: {
    outDir: '../dist',
    emptyOutDir: true,
    target: 'es2022',
    modulePreload: false,
    cssCodeSplit: false,
    assetsInlineLimit: Number.MAX_SAFE_INTEGER,
    reportCompressedSize: false,
    rolldownOptions: {
      input: fileURLToPath(new URL('./src/management.html', import.meta.url)),
    },
  },
});
